"""Property test: generated names thrown at every endpoint that takes a path or a name.

Names are built from traversal pieces (``..``, ``.``, empty components), absolute paths into a
victim folder beside the workspace, encoded separators (``%2F``, ``%2e%2e``), backslashes,
``~``, NUL and symlinks inside the workspace that point at the victim. Whatever the answer, the
victim must be unchanged, nothing may appear outside the workspace, the secret never comes
back, no answer is a 5xx (but the web app's 503 for the absent model server, after the request
passed), and a training request that is accepted wrote a config whose paths stay inside.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forgellm.models.resolve import MODEL_MARKER
from forgellm.runs.layout import RUN_MARKER
from tests.test_security_requests import SECRET, prose, tree
from tests.web_helpers import free_port

PIECES = [
    "..",
    ".",
    "",
    "~",
    "~root",
    "victim",
    "secret.txt",
    "model",
    "data",
    "runs",
    "cpt",
    "ift",
    "base",
    "published",
    "dataset",
    "SmolLM2-135M-Instruct",
    "link",
    "linkdir",
    "notes.txt",
    "%2e%2e",
    "%2F",
    "..%2F..",
    "%252e%252e",
    "..\\..",
    "a\\b",
    "x\x00y",
    "new-run",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """A workspace with the embedded model's place filled, symlinks to a victim beside it."""
    root = tmp_path_factory.mktemp("property")
    workspace, victim = root / "ws", root / "victim"
    shutil.copytree(tiny_model_dir, victim / "model")
    (victim / "model" / MODEL_MARKER).write_text("{}")
    (victim / "model" / RUN_MARKER).write_text("")
    (victim / "secret.txt").write_text(SECRET)
    (victim / "data").mkdir()
    (victim / "data" / "doc.txt").write_text(SECRET)
    base = workspace / "models" / "base" / "SmolLM2-135M-Instruct"
    shutil.copytree(tiny_model_dir, base)
    (base / MODEL_MARKER).write_text("{}")
    for kind in ("cpt", "ift", "published"):
        (workspace / "models" / kind).mkdir(parents=True)
        (workspace / "models" / kind / "link").symlink_to(victim / "model")
    (workspace / "models" / "base" / "link").symlink_to(victim / "model")
    (workspace / "dataset").mkdir()
    (workspace / "dataset" / "notes.txt").write_text(prose(0))  # stats succeed once, then come from the cache
    (workspace / "dataset" / "link").symlink_to(victim / "secret.txt")
    (workspace / "dataset" / "linkdir").symlink_to(victim / "data")
    return root, workspace, victim


@pytest.fixture(scope="module")
def clients(world):
    from forgellm.serving.app import create_app as server_app
    from forgellm.web.app import create_app as web_app
    from forgellm.workspace import Workspace

    _, workspace, _ = world
    web = web_app(
        {
            "WORKSPACE": workspace,
            "START_BACKGROUND": False,
            "ROOTS": "",
            "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            "TRAIN_COMMAND": [sys.executable, "-c", "pass"],
        }
    )  # the config it wrote is checked
    server = server_app({"FORGELLM_ENGINE": "torch", "FORGELLM_ROOTS": "", "FORGELLM_WORKSPACE": Workspace(workspace)})
    yield web.test_client(), server.test_client()
    server.extensions["forgellm.registry"].close()


def names(victim: Path) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(PIECES)
    relative = st.lists(pieces, min_size=1, max_size=5).map("/".join)
    absolute = st.tuples(st.sampled_from(["/", f"{victim}/", f"{victim.parent}/ws/../victim/", "//"]), relative).map(
        "".join
    )
    return st.one_of(relative, absolute, st.sampled_from([str(victim), str(victim / "model"), "/"]))


def training(key: str) -> Callable[[Any, Any, str], Any]:
    def call(web, _server, name):
        config = {"model_name": "SmolLM2-135M-Instruct", "input_dir": "dataset", "max_iterations": 1, key: name}
        return web.post("/api/training/start", json={"config": config, "allow_concurrent": True})

    return call


ENDPOINTS: dict[str, Callable[[Any, Any, str], Any]] = {
    "delete": lambda web, _s, n: web.delete("/api/models", json={"name": n, "confirm": n}),
    **{
        f"train:{key}": training(key)
        for key in (
            "model_name",
            "input_dir",
            "general_data_dir",
            "validation_dir",
            "eval_qa",
            "output_dir",
            "run_name",
        )
    },
    "run": lambda web, _s, n: web.get(f"/api/runs/{quote(n, safe='/%')}"),
    "checkpoints": lambda web, _s, n: web.get("/api/checkpoints", query_string={"run": n}),
    "dashboard": lambda web, _s, n: web.get("/api/dashboard/data", query_string={"run": n}),
    "preview": lambda web, _s, n: web.get("/api/datasets/preview", query_string={"path": n}),
    "stats-model": lambda web, _s, n: web.get("/api/datasets/stats", query_string={"path": ".", "model": n}),
    "fuse": lambda web, _s, n: web.post("/api/models/fuse", json={"run": n}),
    "publish": lambda web, _s, n: web.post("/api/models/publish", json={"run": n}),
    "web-load": lambda web, _s, n: web.post("/api/model/load", json={"model": n}),
    "web-adapter": lambda web, _s, n: web.post(
        "/api/model/generate", json={"prompt": "hi", "model": "SmolLM2-135M-Instruct", "adapter": n}
    ),
    "server-load": lambda _w, server, n: server.post("/api/model/load", json={"model": n}),
    "server-adapter": lambda _w, server, n: server.post(
        "/api/model/load", json={"model": "SmolLM2-135M-Instruct", "adapter": n}
    ),
    "server-v1": lambda _w, server, n: server.post(
        "/v1/completions", json={"model": n, "prompt": "hi", "max_tokens": 1}
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_no_request_reaches_outside_the_workspace(world, clients, endpoint):
    root, workspace, victim = world
    web, server = clients
    outside_before = {k: v for k, v in tree(root).items() if not k.startswith("ws")}
    base_before = tree(workspace / "models" / "base")
    dataset_before = tree(workspace / "dataset")

    @settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(name=names(victim))
    def check(name: str) -> None:
        response = ENDPOINTS[endpoint](web, server, name)
        body = response.get_data(as_text=True)
        assert response.status_code < 500 or (response.status_code == 503 and endpoint.startswith("web-")), body
        assert SECRET not in body
        if str(victim) in body:
            assert str(victim) in name, f"the answer shows a path the caller did not send: {body[:300]}"
        if endpoint.startswith("train:") and response.status_code == 202:
            _written_paths_stay_inside(response.get_json()["job"]["config_path"], workspace)
        assert {k: v for k, v in tree(root).items() if not k.startswith("ws")} == outside_before
        assert tree(workspace / "models" / "base") == base_before
        assert tree(workspace / "dataset") == dataset_before

    check()


def _written_paths_stay_inside(config_path: str, workspace: Path) -> None:
    config = yaml.safe_load(Path(config_path).read_text())
    ws = workspace.resolve()
    for key in ("input_dir", "general_data_dir", "validation_dir", "eval_qa", "output_dir", "model_name"):
        value = config.get(key)
        if value and key != "model_name" or (value and "/" in str(value)):
            resolved = (ws / value).resolve() if not Path(value).is_absolute() else Path(value).resolve()
            assert resolved == ws or ws in resolved.parents, (key, value)
    if config.get("run_name"):
        assert "/" not in config["run_name"] and config["run_name"] not in (".", "..")
