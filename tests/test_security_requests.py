"""What a request may reach on disk, through HTTP: the reproductions of issue 23, one test each.

Each test runs the web app or the model server on a scratch workspace with a *victim* beside
it (a base model with ForgeLLM's marker, a secret file, an empty folder) and no listed roots,
then checks the answer and that the victim survives and nothing was written outside.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from forgellm.models.resolve import MODEL_MARKER
from forgellm.security.requests import MAX_JSON_DEPTH
from tests.web_helpers import free_port, write_run

SECRET = "victim-secret-0xC0FFEE"


SAMPLE_CPT = Path(__file__).resolve().parents[1] / "dataset" / "sample" / "cpt"


def prose(seed: int) -> str:
    """A document the data pipeline keeps: one of the repository's sample CPT documents."""
    return sorted(SAMPLE_CPT.glob("*.md"))[seed].read_text()


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``root``, symlinks not followed."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


@pytest.fixture
def victim(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """Outside the workspace: a model carrying ForgeLLM's marker, a secret and an empty folder."""
    outside = tmp_path / "victim"
    shutil.copytree(tiny_model_dir, outside / "model")
    (outside / "model" / MODEL_MARKER).write_text("{}")
    (outside / "secret.txt").write_text(SECRET)
    (outside / "data").mkdir()
    (outside / "data" / "doc.txt").write_text(SECRET)
    return outside


@pytest.fixture
def outside_snapshot(tmp_path: Path, victim: Path, workspace: Path):
    """A check that nothing outside the workspace changed (tmp_path minus the workspace)."""

    def snapshot() -> dict[str, bytes | None]:
        return {k: v for k, v in tree(tmp_path).items() if not k.startswith(workspace.name)}

    before = snapshot()
    yield lambda: snapshot() == before


@pytest.fixture
def web(workspace: Path, tiny_model_dir: Path):
    from forgellm.web.app import create_app

    # The embedded model's place in the workspace, as `forgellm models import-default` leaves it.
    base = workspace / "models" / "base" / "SmolLM2-135M-Instruct"
    shutil.copytree(tiny_model_dir, base)
    (base / MODEL_MARKER).write_text("{}")
    (workspace / "dataset").mkdir(exist_ok=True)
    (workspace / "dataset" / "notes.txt").write_text(prose(0))
    app = create_app(
        {
            "WORKSPACE": workspace,
            "START_BACKGROUND": False,
            "ROOTS": "",
            "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            # Accepted training requests start this instead of minutes of training; the
            # config the app wrote is what the tests check.
            "TRAIN_COMMAND": [sys.executable, "-c", "pass"],
        }
    )
    return app


@pytest.fixture
def client(web):
    return web.test_client()


@pytest.fixture
def server_app(workspace: Path):
    from forgellm.serving.app import create_app

    return create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_ROOTS": ""})


def error_of(response, status: int | tuple[int, ...]) -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.get_data(as_text=True))
    return response.get_json()["error"]


# --------------------------------------------------------------------------- 1. delete escapes through ..


@pytest.mark.parametrize(
    "name",
    [
        "cpt/../base/SmolLM2-135M-Instruct",
        "base/SmolLM2-135M-Instruct",
        "published/../base/SmolLM2-135M-Instruct",
        "cpt/..",
        "cpt/./x",
        "../dataset",
        "cpt/x/../../base/SmolLM2-135M-Instruct",
        "/abs/path",
        "cpt\\..\\base",
    ],
)
def test_delete_never_climbs_out_of_runs_and_published_models(client, workspace, name, outside_snapshot):
    before = tree(workspace)
    error = error_of(client.delete("/api/models", json={"name": name, "confirm": name}), (400, 403))
    assert error["field"] == "name"
    assert tree(workspace) == before and outside_snapshot()


def test_delete_takes_runs_and_published_models_forgellm_created(client, workspace):
    write_run(workspace, "cpt/mine")
    published = workspace / "models" / "published" / "mine"
    published.mkdir(parents=True)
    (published / MODEL_MARKER).write_text("{}")
    imported = workspace / "models" / "published" / "imported"  # marker-less: not ours
    imported.mkdir()
    (imported / "config.json").write_text("{}")
    for name in ("cpt/mine", "published/mine"):
        assert client.delete("/api/models", json={"name": name, "confirm": name}).status_code == 200
    assert (
        error_of(
            client.delete("/api/models", json={"name": "published/imported", "confirm": "published/imported"}), 403
        )["field"]
        == "name"
    )
    assert not (workspace / "models" / "cpt" / "mine").exists() and not published.exists() and imported.exists()
    assert (workspace / "models" / "base" / "SmolLM2-135M-Instruct").exists()


# --------------------------------------------------------------------------- 2. training writes anywhere


@pytest.mark.parametrize(
    "key, value, status",
    [
        ("run_name", "/tmp/forgellm-escape/run", 400),
        ("run_name", "../../../x", 403),
        ("run_name", "a/b", 400),
        ("run_name", "..", 403),
        ("output_dir", "{victim}", 403),
        ("output_dir", "../outside", 403),
        ("output_dir", "/", 403),
        ("general_data_dir", "{victim}/data", 403),
        ("input_dir", "{victim}/data", 403),
        ("input_dir", "dataset/../../victim/data", 403),
        ("model_name", "{victim}/model", 403),
        ("model_name", "../victim/model", 403),
        ("model_name", "~/model", 400),
        ("learning_rate", -1, 400),
        ("learnin_rate", 0.1, 400),
    ],
)
def test_training_start_refuses_before_any_process_starts(
    client, workspace, victim, outside_snapshot, key, value, status
):
    value = value.format(victim=victim) if isinstance(value, str) else value
    config = {"model_name": "SmolLM2-135M-Instruct", "input_dir": "dataset", "max_iterations": 1, key: value}
    error = error_of(client.post("/api/training/start", json={"config": config}), status)
    assert error["field"] == key and key in error["message"]
    assert str(victim) not in error["message"].replace(str(value), "")  # only what the caller sent
    assert not list((workspace / "configs").glob("web/*.yaml")), "nothing is started for a refused config"
    assert not Path("/tmp/forgellm-escape").exists() and outside_snapshot()


def test_training_start_accepts_workspace_paths_and_listed_roots(web, workspace, victim):
    from forgellm.access import Roots
    from forgellm.security.requests import ROOTS_EXTENSION

    client = web.test_client()
    config = {
        "model_name": "SmolLM2-135M-Instruct",
        "input_dir": "dataset",
        "output_dir": "models/cpt",
        "run_name": "ok-run",
        "max_iterations": 1,
    }
    accepted = client.post("/api/training/start", json={"config": config})
    assert accepted.status_code == 202, accepted.get_json()
    # The user lists the victim's folder: now a request may read data and write runs there.
    web.extensions[ROOTS_EXTENSION] = Roots.of(web.config["WORKSPACE"], listed=str(victim))
    config.update(input_dir=str(victim / "data"), output_dir=str(victim / "runs"))
    listed = client.post("/api/training/start", json={"config": config, "allow_concurrent": True})
    assert listed.status_code == 202, listed.get_json()


# --------------------------------------------------------------------------- 3. model, adapter, tokenizer paths


def test_web_model_routes_confine_model_and_adapter(client, victim):
    for body, field in [
        ({"model": str(victim / "model")}, "model"),
        ({"model": "SmolLM2-135M-Instruct", "adapter": str(victim / "model")}, "adapter"),
        ({"model": "../victim/model"}, "model"),
    ]:
        # Refused by the web app itself (403), before the request is passed to the model server (503).
        assert error_of(client.post("/api/model/load", json=body), 403)["field"] == field
        assert error_of(client.post("/api/model/generate", json={"prompt": "hi", **body}), 403)["field"] == field


def test_dataset_stats_tokenizer_is_confined(client, victim):
    for model in (str(victim / "model"), "../victim/model", "~/model"):
        error = error_of(client.get("/api/datasets/stats", query_string={"path": ".", "model": model}), (400, 403))
        assert error["field"] == "model"
    missing = error_of(client.get("/api/datasets/stats", query_string={"path": ".", "model": "nope"}), 404)
    assert missing["field"] == "model" and str(client.application.config["WORKSPACE"].root) not in missing["message"]


def test_model_server_confines_models_even_with_a_valid_token(workspace, victim, tiny_model_dir):
    from forgellm.serving.app import create_app

    token = "t" * 8 + "0123456789abcdef"
    app = create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_ROOTS": "", "FORGELLM_TOKEN": token})
    http = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for path, body in [
        ("/api/model/load", {"model": str(victim / "model")}),
        ("/api/model/generate", {"prompt": "hi", "model": str(victim / "model")}),
        ("/v1/chat/completions", {"model": str(victim / "model"), "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"model": str(victim / "model"), "prompt": "hi"}),
        ("/v1/completions", {"model": "../victim/model", "prompt": "hi"}),
    ]:
        error = error_of(http.post(path, json=body, headers=headers), 403)
        assert error["field"] == "model" and error["param"] == "model"
    assert http.get("/api/model/status", headers=headers).get_json()["cache"] == []


def test_symlinked_model_inside_the_workspace_is_confined_too(workspace, victim):
    from forgellm.serving.app import create_app

    (workspace / "models" / "base").mkdir(parents=True, exist_ok=True)
    (workspace / "models" / "base" / "linked").symlink_to(victim / "model")
    http = create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_ROOTS": ""}).test_client()
    error = error_of(http.post("/api/model/load", json={"model": "linked"}), 403)
    assert error["field"] == "model" and str(victim) not in error["message"]


def test_unknown_model_404_lists_no_absolute_paths(server_app, workspace):
    error = error_of(server_app.test_client().post("/api/model/load", json={"model": "no-such-model"}), 404)
    assert error["field"] == "model" and "<workspace>/models/base/no-such-model" in error["message"]
    assert str(workspace) not in error["message"] and "/tmp" not in error["message"]


# --------------------------------------------------------------------------- 4. deep JSON


def deep(levels: int) -> bytes:
    return b'{"a": ' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/model/generate"),
        ("post", "/api/model/load"),
        ("post", "/api/training/start"),
        ("delete", "/api/models"),
        ("post", "/api/models/fuse"),
    ],
)
def test_deep_json_is_a_400_in_the_web_app(client, method, path):
    for levels in (10_000, MAX_JSON_DEPTH + 1):
        response = getattr(client, method)(path, data=deep(levels), content_type="application/json")
        assert "deeper than" in error_of(response, 400)["message"]
    nested_config = {"config": {"lora_target_modules": json.loads("[" * 40 + "]" * 40)}}
    assert client.post("/api/training/start", json=nested_config).status_code == 400


@pytest.mark.parametrize("path", ["/api/model/generate", "/api/model/load", "/v1/chat/completions"])
def test_deep_json_is_a_400_on_the_model_server(server_app, path):
    response = server_app.test_client().post(path, data=deep(10_000), content_type="application/json")
    assert "deeper than" in error_of(response, 400)["message"]


# --------------------------------------------------------------------------- 5. engine.io origin and Host


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Host": "evil.example"},
        {"Host": "evil.example", "Origin": "http://evil.example"},
    ],
)
def test_socketio_transport_refuses_foreign_origin_or_host(client, headers):
    for query in ("EIO=4&transport=polling", "EIO=4&transport=websocket"):
        response = client.get(f"/socket.io/?{query}", headers=headers)
        assert response.status_code == 403, response.get_data(as_text=True)
        assert "Access-Control-Allow-Origin" not in response.headers
    own = client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": "http://localhost"})
    assert own.status_code == 200 and own.get_data(as_text=True).startswith("0{")


# --------------------------------------------------------------------------- 6. status during generation


@pytest.mark.slow
def test_health_and_status_answer_while_every_thread_generates(workspace, tiny_model_dir):
    from forgellm.serving.app import create_app
    from forgellm.serving.main import RunningServer, ServerOptions

    with (
        RunningServer(create_app({"FORGELLM_ENGINE": "torch"}), ServerOptions(port=0, threads=1)) as server,
        httpx.Client(base_url=server.url, timeout=120) as http,
    ):
        http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
        long = {"prompt": "Hi", "format": "raw", "max_tokens": 3000, "temperature": 0, "stream": True}
        # The only worker thread streams a long generation; a second generation queues behind it.
        with http.stream("POST", "/api/model/generate", json=long) as first:
            next(first.iter_lines())

            def wait_in_queue() -> None:
                with contextlib.suppress(httpx.HTTPError):  # gives up after 2 s, or the server stops first
                    httpx.post(f"{server.url}/api/model/generate", json=long, timeout=2)

            queued = threading.Thread(target=wait_in_queue, daemon=True)
            queued.start()
            for path in ("/api/health", "/api/model/status"):
                started = time.monotonic()
                assert httpx.get(f"{server.url}{path}", timeout=30).status_code == 200
                assert time.monotonic() - started < 1.0, f"{path} waited behind the generations"
            assert not first.is_closed, "the generation was still streaming while status answered"
        queued.join(30)  # leaving the stream cancels the generation; the queued one gives up after 2 s


# --------------------------------------------------------------------------- 7. dataset stats processes


@pytest.mark.slow
def test_dataset_stats_processes_are_capped_and_shared(web, client, workspace):
    from forgellm.web.services.dataset_stats import DatasetStats

    stats = web.extensions["forgellm"]["dataset_stats"] = DatasetStats(web.config["WORKSPACE"], max_processes=1)
    (workspace / "dataset" / "other.txt").write_text(prose(1))
    answers: list = []

    def ask() -> None:
        answers.append(client.get("/api/datasets/stats", query_string={"path": "notes.txt", "mode": "cpt"}))

    first, joiner = threading.Thread(target=ask), threading.Thread(target=ask)
    first.start()
    deadline = time.monotonic() + 10
    while not stats._running and time.monotonic() < deadline:
        time.sleep(0.01)
    joiner.start()  # the same stats: waits for the running process instead of starting one
    busy = client.get("/api/datasets/stats", query_string={"path": "other.txt", "mode": "cpt"})
    assert error_of(busy, 429)["type"] == "rate_limit_error"
    assert busy.headers["Retry-After"] == "5"
    first.join(300)
    joiner.join(300)
    assert [a.status_code for a in answers] == [200, 200], [a.get_json() for a in answers]
    assert answers[0].get_json() == answers[1].get_json()
    again = client.get("/api/datasets/stats", query_string={"path": "other.txt", "mode": "cpt"})
    assert again.status_code == 200, again.get_json()
