"""The web app's REST API and live metrics, through Flask's and Flask-SocketIO's test clients."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgellm.web.app import create_app
from tests.cli_helpers import forgellm_error
from tests.web_helpers import free_port, write_run


@pytest.fixture
def app(workspace: Path):
    return create_app(
        {"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    )


@pytest.fixture
def client(app):
    return app.test_client()


def socket_client(app, client):
    return app.extensions["forgellm"]["socketio"].test_client(app, flask_test_client=client)


def metrics_messages(sio) -> list[dict]:
    return [m["args"][0] for m in sio.get_received() if m["name"] == "metrics"]


def received_indices(messages: list[dict]) -> list[int]:
    return [m["start"] + i for m in messages for i in range(len(m["events"]))]


# --------------------------------------------------------------------------- pages and documents


def test_index_page_loads_local_assets_only(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for tab in ("Training", "Monitoring", "Compare", "Testing", "Models", "Datasets"):
        assert f'data-tab="{tab.lower()}"' in html
    assert "/static/vendor/chart.umd.min.js" in html and "/static/vendor/socket.io.min.js" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    assert client.get("/static/js/app.js").status_code == 200
    assert client.get("/api/health").get_json()["ok"] is True


def test_openapi_describes_every_api_route(app, client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api"):
            path = rule.rule.replace("<path:rid>", "{rid}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (path, method.lower()) in described, f"{method} {rule.rule} is missing from the OpenAPI document"
    start = doc["paths"]["/api/training/start"]["post"]
    schema_name = start["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert "allow_concurrent" in doc["components"]["schemas"][schema_name]["properties"]
    assert "409" in start["responses"]


def test_config_schema_lists_every_training_key_with_default_and_help(client):
    from forgellm.training.config import TrainingConfig

    fields = {f["name"]: f for f in client.get("/api/config/schema").get_json()["fields"]}
    assert set(fields) == set(TrainingConfig.model_fields)
    assert fields["learning_rate"]["default"] == TrainingConfig().learning_rate
    assert fields["training_type"]["enum"] == ["cpt", "ift", "preference"]
    assert all(f["description"] for f in fields.values())
    # the form shows a loss's parameters only where they apply
    assert fields["beta"]["applies"] == {"training_type": ["preference"], "preference_loss": ["dpo", "simpo"]}
    assert fields["learning_rate"]["applies"] is None


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    "config, field",
    [
        ({"learning_rate": -1}, "learning_rate"),
        ({"max_iterations": "many"}, "max_iterations"),
        ({"learnin_rate": 0.1}, "learnin_rate"),
        ({"fine_tune_type": "qlora"}, "fine_tune_type"),
        ({"model_name": "no-such-model"}, "model_name"),
        ({"input_dir": "../outside"}, "input_dir"),
        ({"input_dir": "dataset/missing"}, "input_dir"),
    ],
)
def test_training_start_refuses_bad_values_naming_the_field(client, workspace, tiny_model_dir, config, field):
    (workspace / "dataset").mkdir(exist_ok=True)
    response = client.post("/api/training/start", json={"config": {"model_name": str(tiny_model_dir), **config}})
    assert response.status_code in (400, 403), response.get_json()
    error = response.get_json()["error"]
    assert error["field"] == field and error["message"]
    assert not list((workspace / "configs").glob("web/*.yaml")), "nothing is started for a refused form"


def test_training_start_refuses_bad_bodies(client):
    assert client.post("/api/training/start", data="{nope", content_type="application/json").status_code == 400
    assert client.post("/api/training/start", json={"config": {}, "extra": 1}).get_json()["error"]["field"] == "extra"
    assert client.post("/api/training/start", json={"config": []}).status_code == 400
    assert client.post("/api/training/stop", json={"run": 5}).status_code == 400


def test_second_run_is_refused_unless_asked_and_stop_ends_the_processes(client, workspace, tiny_model_dir):
    (workspace / "dataset").mkdir(exist_ok=True)
    config = {"model_name": str(tiny_model_dir), "input_dir": "dataset", "max_iterations": 5}
    first = client.post("/api/training/start", json={"config": config})
    assert first.status_code == 202, first.get_json()
    job = first.get_json()["job"]
    written = Path(job["config_path"]).read_text()
    assert str(tiny_model_dir) in written and "max_iterations: 5" in written
    try:
        second = client.post("/api/training/start", json={"config": config})
        assert second.status_code == 409
        assert "allow_concurrent" in second.get_json()["error"]["message"]
        third = client.post("/api/training/start", json={"config": config, "allow_concurrent": True})
        assert third.status_code == 202
        status = client.get("/api/training/status").get_json()
        assert len(status["active"]) == 2 and {j["state"] for j in status["jobs"]} == {"running"}
    finally:
        stopped = client.post("/api/training/stop", json={})
    assert stopped.status_code == 200 and len(stopped.get_json()["stopped"]) == 2
    deadline = time.time() + 30
    while client.get("/api/training/status").get_json()["active"] and time.time() < deadline:
        time.sleep(0.2)
    status = client.get("/api/training/status").get_json()
    assert status["active"] == [] and {j["state"] for j in status["jobs"]} == {"stopped"}
    assert client.post("/api/training/stop", json={}).status_code == 409
    assert client.post("/api/training/stop", json={"run": "cpt/other"}).status_code == 404


def test_a_run_started_right_after_stopping_one_waits_for_it_instead_of_a_409(client, workspace, tiny_model_dir):
    docs = workspace / "dataset" / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(12):
        (docs / f"d{i}.txt").write_text(" ".join(f"word{(i * 7 + j) % 50}" for j in range(400)))
    config = {
        "model_name": str(tiny_model_dir),
        "input_dir": "dataset/docs",
        "max_iterations": 100000,
        "steps_per_eval": 100000,
        "save_every": 100000,
        "max_seq_length": 32,
        "data_mixture_ratio": 1.0,
        "quality_filters": False,
    }
    first = client.post("/api/training/start", json={"config": config})
    assert first.status_code == 202, first.get_json()
    deadline = time.time() + 120
    while not (run := client.get("/api/training/status").get_json()["jobs"][0]["run"]) and time.time() < deadline:
        time.sleep(0.2)  # until the trainer holds its run
    assert run, "the trainer never started"
    metrics = workspace / "models" / run / "metrics.jsonl"
    while not (metrics.is_file() and '"event": "train"' in metrics.read_text()) and time.time() < deadline:
        time.sleep(0.2)  # until it trains: a stop then saves a checkpoint before the process exits
    assert client.post("/api/training/stop", json={}).status_code == 200
    assert client.get("/api/training/status").get_json()["jobs"][0]["state"] in ("stopping", "stopped")
    second = client.post("/api/training/start", json={"config": {**config, "max_iterations": 2}})
    assert second.status_code == 202, second.get_json()
    states = {j["id"]: j["state"] for j in client.get("/api/training/status").get_json()["jobs"]}
    assert states[first.get_json()["job"]["id"]] == "stopped"
    client.post("/api/training/stop", json={})


def test_a_run_training_elsewhere_blocks_a_new_one(client, workspace, tiny_model_dir):
    write_run(workspace, "cpt/busy", status="running", pid=os.getpid())
    (workspace / "dataset").mkdir(exist_ok=True)
    response = client.post("/api/training/start", json={"config": {"model_name": str(tiny_model_dir)}})
    assert response.status_code == 409 and "cpt/busy" in response.get_json()["error"]["message"]
    assert client.get("/api/training/status").get_json()["runs"][0]["id"] == "cpt/busy"


# --------------------------------------------------------------------------- runs, checkpoints, dashboard


def test_runs_and_checkpoints(client, workspace):
    write_run(workspace, "cpt/demo", steps=10)
    write_run(workspace, "ift/dead", steps=3, status="running", pid=2**22 + 12345)
    runs = {r["id"]: r for r in client.get("/api/runs").get_json()["runs"]}
    assert runs["cpt/demo"]["status"] == "done" and runs["cpt/demo"]["step"] == 10
    assert runs["cpt/demo"]["progress"] == 1.0 and runs["cpt/demo"]["best_checkpoint"] == "step_000010"
    assert runs["ift/dead"]["status"] == "failed", "a 'running' run whose process is gone is not running"
    one = client.get("/api/runs/cpt/demo").get_json()
    assert [c["name"] for c in one["checkpoints"]] == ["step_000005", "step_000010"]
    assert one["config"].startswith("model_name")
    checkpoints = client.get("/api/checkpoints?run=cpt/demo").get_json()["checkpoints"]
    assert [c["step"] for c in checkpoints] == [5, 10] and checkpoints[1]["best"]
    assert len(client.get("/api/checkpoints").get_json()["checkpoints"]) == 2
    assert client.get("/api/runs/cpt/nope").status_code == 404
    assert client.get("/api/runs/../../etc").status_code in (403, 404)
    assert client.get("/api/checkpoints?run=../..").status_code in (403, 404)


def test_dashboard_data_of_one_and_several_runs(client, workspace):
    write_run(workspace, "cpt/a", steps=10)
    write_run(workspace, "cpt/b", steps=20)
    data = client.get("/api/dashboard/data?run=cpt/a&run=cpt/b&max_points=10").get_json()
    assert [r["id"] for r in data["runs"]] == ["cpt/a", "cpt/b"]
    loss = data["runs"][1]["series"]["train_loss"]
    assert len(loss["x"]) <= 12 and loss["x"][-1] == 20 and min(loss["y"]) == pytest.approx(1.0)
    assert client.get("/api/dashboard/data").status_code == 400
    assert client.get("/api/dashboard/data?run=cpt/a&max_points=1").get_json()["error"]["field"] == "max_points"
    assert client.get("/api/dashboard/data?run=cpt/zzz").status_code == 404


# --------------------------------------------------------------------------- datasets


def test_datasets_list_and_preview(client, workspace):
    data = workspace / "dataset"
    (data / "sub").mkdir(parents=True)
    (data / "notes.txt").write_text("hello world\n" * 10)
    (data / "sub" / "qa.jsonl").write_text('{"text": "x"}\n')
    (data / "blob.bin").write_bytes(b"\0\1\2")
    entries = {e["path"]: e for e in client.get("/api/datasets").get_json()["entries"]}
    assert entries["sub"]["type"] == "folder" and entries["sub/qa.jsonl"]["size"] == 14
    preview = client.get("/api/datasets/preview?path=notes.txt&max_bytes=11").get_json()
    assert preview["text"] == "hello world" and preview["truncated"] and not preview["binary"]
    assert client.get("/api/datasets/preview?path=blob.bin").get_json()["binary"]
    assert client.get("/api/datasets/preview?path=sub").status_code == 400
    assert client.get("/api/datasets/preview?path=missing.txt").status_code == 404
    assert client.get("/api/datasets/preview").get_json()["error"]["field"] == "path"


def test_dataset_paths_outside_the_folder_are_refused(client, workspace, tmp_path):
    data = workspace / "dataset"
    data.mkdir(exist_ok=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show")
    (data / "link.txt").symlink_to(secret)
    (data / "linkdir").symlink_to(tmp_path)
    (workspace / "config.txt").write_text("workspace but not dataset")
    for path, status in [
        ("../config.txt", 403),
        ("../../secret.txt", 403),
        (str(secret), 400),
        (str(data / "link.txt"), 400),
        ("link.txt", 403),
        ("linkdir/secret.txt", 403),
        ("sub/../../config.txt", 403),
    ]:
        response = client.get("/api/datasets/preview", query_string={"path": path})
        assert response.status_code == status, (path, response.get_json())
        assert "do not show" not in response.get_data(as_text=True)
    listed = [e["path"] for e in client.get("/api/datasets").get_json()["entries"]]
    assert "link.txt" not in listed and "linkdir" not in listed
    assert client.get("/api/datasets/stats", query_string={"path": "../config.txt"}).status_code == 403


# --------------------------------------------------------------------------- models and the model server proxy


def test_models_list_and_delete_rules(client, workspace, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    write_run(workspace, "cpt/old")
    (workspace / "models" / "published" / "handmade").mkdir(parents=True)
    (workspace / "models" / "published" / "handmade" / "config.json").write_text("{}")
    names = {m["name"]: m for m in client.get("/api/models").get_json()["models"]}
    assert names["tiny"]["architecture"] == "LlamaForCausalLM"
    assert names["cpt/old"]["run"]["status"] == "done"

    def delete(name, confirm=None):
        return client.delete("/api/models", json={"name": name, "confirm": confirm if confirm is not None else name})

    assert delete("cpt/old", confirm="old").get_json()["error"]["field"] == "confirm"
    assert delete("base/tiny").status_code == 403
    assert delete("published/handmade").status_code == 403, "no marker: not created by ForgeLLM"
    assert delete("cpt/../base/tiny").status_code == 403
    assert delete("cpt/missing").status_code == 404
    write_run(workspace, "cpt/live", status="running", pid=os.getpid())
    assert delete("cpt/live").status_code == 409
    assert delete("cpt/old").status_code == 200
    assert not (workspace / "models" / "cpt" / "old").exists()
    assert (workspace / "models" / "base" / "tiny").exists()


def test_fuse_and_publish_validate_before_starting(client, workspace):
    assert client.post("/api/models/fuse", json={"run": "cpt/none"}).status_code == 404
    write_run(workspace, "cpt/demo")
    bad = client.post("/api/models/publish", json={"run": "cpt/demo", "name": "../escape"})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "name"
    assert client.post("/api/models/fuse", json={"run": "cpt/demo", "checkpoint": "worst"}).status_code == 400
    assert client.get("/api/tasks").get_json() == {"tasks": []}


def test_model_routes_validate_then_report_an_unreachable_server(client):
    bad = client.post("/api/model/generate", json={"prompt": "hi", "max_tokens": 0})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "max_tokens"
    assert client.post("/api/model/generate", json={"max_tokens": 5}).status_code == 400
    assert client.post("/api/model/load", json={}).get_json()["error"]["field"] == "model"
    for method, path, body in [
        ("post", "/api/model/load", {"model": "default"}),
        ("get", "/api/model/status", None),
        ("post", "/api/model/generate", {"prompt": "hi"}),
        ("post", "/api/model/unload", {}),
    ]:
        response = getattr(client, method)(path, json=body)
        assert response.status_code == 503 and "forgellm server" in response.get_json()["error"]["message"]
    assert client.get("/api/server/status").get_json()["up"] is False


# --------------------------------------------------------------------------- live metrics over SocketIO


def test_subscribe_catches_up_then_streams_new_lines_once(app, client, workspace):
    run = write_run(workspace, "cpt/live", steps=4, status="running", pid=os.getpid())
    sio = socket_client(app, client)
    sio.emit("subscribe", {"run": "cpt/live", "after": -1})
    history = metrics_messages(sio)
    total = len((run / "metrics.jsonl").read_text().splitlines())
    assert received_indices(history) == list(range(total))

    live = app.extensions["forgellm"]["live"]
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "train", "step": 5, "loss": 2.0}) + "\n")
        fh.write('{"event": "train", "step": 6, "lo')  # torn: the trainer is mid-write
    live.poll_once()
    new = metrics_messages(sio)
    assert received_indices(new) == [total] and new[0]["events"][0]["step"] == 5
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('ss": 1.9}\n')
    live.poll_once()
    new = metrics_messages(sio)
    assert received_indices(new) == [total + 1] and new[0]["events"][0]["loss"] == 1.9
    live.poll_once()
    assert metrics_messages(sio) == []


def test_a_reconnecting_browser_gets_exactly_what_it_missed(app, client, workspace):
    run = write_run(workspace, "cpt/live", steps=4, status="running", pid=os.getpid())
    live = app.extensions["forgellm"]["live"]
    first = socket_client(app, client)
    first.emit("subscribe", {"run": "cpt/live", "after": -1})
    seen = received_indices(metrics_messages(first))
    first.disconnect()
    with open(run / "metrics.jsonl", "a") as fh:
        for step in (5, 6, 7):
            fh.write(json.dumps({"event": "train", "step": step, "loss": 1.0}) + "\n")
    live.poll_once()  # lines pushed while the browser was away
    second = socket_client(app, client)
    second.emit("subscribe", {"run": "cpt/live", "after": seen[-1]})
    caught_up = received_indices(metrics_messages(second))
    assert caught_up == [seen[-1] + 1, seen[-1] + 2, seen[-1] + 3]
    assert sorted(set(seen + caught_up)) == seen + caught_up, "no gap and no duplicate"


def test_subscribe_refuses_unknown_or_outside_runs(app, client):
    sio = socket_client(app, client)
    for run in ("cpt/none", "../../etc"):
        sio.emit("subscribe", {"run": run, "after": -1})
        errors = [m for m in sio.get_received() if m["name"] == "metrics_error"]
        assert errors and run in errors[0]["args"][0]["run"]
    sio.emit("subscribe", {"run": 3})
    assert [m["name"] for m in sio.get_received()] == ["metrics_error"]


def test_new_lines_reach_the_browser_within_two_seconds(workspace):
    app = create_app({"WORKSPACE": workspace, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"})
    client = app.test_client()
    run = write_run(workspace, "cpt/live", steps=2, status="running", pid=os.getpid())
    sio = socket_client(app, client)
    sio.emit("subscribe", {"run": "cpt/live", "after": -1})
    metrics_messages(sio)
    written = time.monotonic()
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"event": "eval", "step": 3, "val_loss": 1.5}) + "\n")
    got = []
    while not got and time.monotonic() - written < 2.0:
        got = metrics_messages(sio)
        time.sleep(0.05)
    assert got and got[0]["events"][0]["val_loss"] == 1.5


# --------------------------------------------------------------------------- processes


def test_web_app_never_imports_an_engine(workspace):
    code = (
        "import sys; from forgellm.web.app import create_app; app = create_app({'START_BACKGROUND': False}); "
        "c = app.test_client(); [c.get(p) for p in ('/', '/api/models', '/api/config/schema', '/api/runs', "
        "'/api/openapi.json')]; print(sorted(m for m in ('torch', 'mlx', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=workspace)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["web", "--port", "{port}"], "--port"),
        (["start", "--web-port", "{port}", "--no-browser"], "--web-port"),
        (["start", "--server-port", "{port}", "--no-browser"], "--server-port"),
    ],
)
def test_a_port_in_use_is_named_with_its_flag(argv, flag):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        message = forgellm_error(*[a.format(port=port) for a in argv])
    assert f"port {port}" in message and flag in message


def test_a_port_a_dead_server_left_in_time_wait_is_free_again():
    """A restarted web app must get its port back while the old connections linger."""
    import socket

    from forgellm.web.ports import ensure_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    connection, _ = server.accept()
    connection.close()  # the server closes first: its end of the connection stays in TIME_WAIT
    time.sleep(0.1)
    server.close()
    client.close()
    ensure_free("127.0.0.1", port, "--port")


def test_supervisor_restarts_a_dead_child_and_stops_all_by_pid():
    from forgellm.web.supervisor import Child, Supervisor

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    supervisor = Supervisor([Child("a", sleeper), Child("b", sleeper)], grace=5)
    supervisor.start()
    first_pid = supervisor.children[0].pid
    os.kill(first_pid, signal.SIGKILL)
    import threading

    watcher = threading.Thread(target=supervisor.watch, kwargs={"poll": 0.05})
    watcher.start()
    deadline = time.time() + 10
    while supervisor.children[0].pid == first_pid and time.time() < deadline:
        time.sleep(0.05)
    assert supervisor.children[0].pid != first_pid and supervisor.children[0].alive()
    processes = [c.process for c in supervisor.children]
    supervisor.request_stop()
    watcher.join(15)
    assert all(p.poll() is not None for p in processes)


# --------------------------------------------------------------------------- access token off loopback


@pytest.mark.parametrize("argv", [["web", "--host", "0.0.0.0"], ["start", "--host", "0.0.0.0", "--no-browser"]])
def test_a_non_loopback_address_needs_a_token(argv, monkeypatch):
    monkeypatch.delenv("FORGELLM_TOKEN", raising=False)
    message = forgellm_error(*argv)
    assert "0.0.0.0" in message and "FORGELLM_TOKEN" in message


def test_with_a_token_the_api_the_page_and_the_socket_require_it(workspace):
    token = "t" * 32
    app = create_app(
        {
            "WORKSPACE": workspace,
            "START_BACKGROUND": False,
            "HOST": "0.0.0.0",
            "ACCESS_TOKEN": token,
            "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    client = app.test_client()
    assert client.get("/api/runs").status_code == 401
    assert client.get("/", headers={"Accept": "text/html"}).headers["Location"].startswith("/login")
    socketio = app.extensions["forgellm"]["socketio"]
    assert not socketio.test_client(app, flask_test_client=client).is_connected()
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    login = client.post("/login", data={"token": token, "next": "/"})
    assert login.status_code == 302
    assert client.get("/api/runs").status_code == 200, "the login cookie opens the API"
    assert socketio.test_client(app, flask_test_client=client).is_connected(), "and the SocketIO connection"
    cross_site = client.post("/api/training/stop", json={}, headers={"Origin": "http://evil.example"})
    assert cross_site.status_code == 403


def test_models_tab_lists_and_imports_ollama_models(client, workspace, tiny_models, tmp_path, monkeypatch):
    from tests.gguf_helpers import gguf_of

    store = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (store / "blobs").mkdir(parents=True)
    gguf_of(tiny_models["qwen2"], store / "blobs" / ("sha256-" + "12" * 32))
    manifest = store / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "12" * 32}]})
    )
    listed = client.get("/api/models").get_json()["importable"]
    assert [g["name"] for g in listed] == ["ollama:tiny:latest"] and listed[0]["app"] == "ollama"

    assert client.post("/api/models/import", json={"source": "/etc/passwd"}).status_code == 404
    assert client.post("/api/models/import", json={"source": "ollama:tiny:latest", "name": "../x"}).status_code == 400
    started = client.post("/api/models/import", json={"source": "ollama:tiny:latest", "name": "tiny-q"})
    assert started.status_code == 202, started.get_json()
    deadline = time.time() + 120
    while time.time() < deadline:
        tasks = client.get("/api/tasks").get_json()["tasks"]
        if tasks and tasks[0]["state"] not in ("running", "starting"):
            break
        time.sleep(0.5)
    assert tasks[0]["state"] in ("done", "succeeded", "finished", "completed"), tasks
    assert (workspace / "models/base/tiny-q/model.safetensors").exists()


def test_route_modules_share_code_through_services_not_each_other():
    """A helper two route modules need lives in `forgellm.web.services` (or `forgellm.web.context`):
    a route module importing another couples two endpoints' code paths."""
    routes = Path(__file__).resolve().parents[1] / "forgellm" / "web" / "routes"
    reached = {}
    for module in sorted(routes.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            reached[module.name] = reached.get(module.name, []) + [n for n in names if "forgellm.web.routes" in n]
    assert {name: found for name, found in reached.items() if found} == {}
