"""Path confinement and the deletion rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forgellm.errors import AccessError, NotFoundError, UserError
from forgellm.models.resolve import MODEL_MARKER
from forgellm.runs.layout import RUN_MARKER
from forgellm.security import confine_read, confine_write, safe_delete
from forgellm.workspace import Workspace


@pytest.fixture
def ws(workspace: Path) -> Workspace:
    return Workspace.current().ensure()


def test_paths_inside_are_resolved(ws):
    (ws.dataset_dir / "a.txt").write_text("hi")
    assert confine_read("dataset/a.txt", ws) == ws.dataset_dir / "a.txt"
    assert confine_read(str(ws.dataset_dir / "a.txt"), ws) == ws.dataset_dir / "a.txt"
    assert confine_write("models/cpt/new-run", ws) == ws.models("cpt") / "new-run"
    assert confine_read("a.txt", ws, within=ws.dataset_dir) == ws.dataset_dir / "a.txt"


@pytest.mark.parametrize("path", ["../outside", "dataset/../../outside", "/etc/passwd", "/", "dataset/../.."])
def test_escapes_refused(ws, path):
    with pytest.raises(AccessError):
        confine_read(path, ws)
    with pytest.raises(AccessError):
        confine_write(path, ws)


def test_within_cannot_be_left(ws):
    with pytest.raises(AccessError):
        confine_read("../configs/x.yaml", ws, within=ws.dataset_dir)


def test_symlink_out_refused(ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (ws.dataset_dir / "link.txt").symlink_to(secret)
    (ws.dataset_dir / "linkdir").symlink_to(tmp_path)
    for path in ("dataset/link.txt", "dataset/linkdir/secret.txt"):
        with pytest.raises(AccessError):
            confine_read(path, ws)


def test_nul_and_loops_are_user_errors(ws):
    with pytest.raises(UserError):
        confine_read("dataset/a\x00b", ws)
    (ws.dataset_dir / "loop").symlink_to(ws.dataset_dir / "loop")
    with pytest.raises(UserError):
        confine_read("dataset/loop/x", ws)


def test_hf_cache_is_readable_not_writable(ws, tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    snapshot = cache / "models--org--m" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert confine_read(str(snapshot), ws) == snapshot.resolve()
    with pytest.raises(AccessError):
        confine_write(str(snapshot), ws)
    with pytest.raises(AccessError):  # a relative path never climbs into the cache
        confine_read(os.path.relpath(snapshot, ws.root), ws)


def _make_run(ws: Workspace, name: str, marker: str | None = RUN_MARKER) -> Path:
    run = ws.models("cpt") / name
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    if marker:
        (run / marker).write_text("x")
    return run


def test_safe_delete_removes_marked_run_and_model(ws):
    run = _make_run(ws, "run1")
    assert safe_delete("cpt/run1", ws) == run and not run.exists()
    model = ws.models("published") / "m1"
    model.mkdir()
    (model / MODEL_MARKER).write_text("x")
    safe_delete(model, ws)
    assert not model.exists()


def test_safe_delete_refuses_unmarked_folder(ws):
    run = _make_run(ws, "foreign", marker=None)
    with pytest.raises(AccessError, match="not created by ForgeLLM"):
        safe_delete("cpt/foreign", ws)
    assert run.exists()


@pytest.mark.parametrize("path", ["cpt", ".", "", "cpt/run1/checkpoints/step_000001", "../dataset", "/tmp"])
def test_safe_delete_refuses_other_targets(ws, path):
    run = _make_run(ws, "run1")
    with pytest.raises((AccessError, UserError)):
        safe_delete(path, ws)
    assert run.exists() and ws.dataset_dir.exists()


def test_safe_delete_refuses_marked_folder_outside_models(ws, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / RUN_MARKER).write_text("x")
    with pytest.raises(AccessError):
        safe_delete(outside, ws)
    (ws.dataset_dir / "marked").mkdir()
    (ws.dataset_dir / "marked" / RUN_MARKER).write_text("x")
    with pytest.raises(AccessError):
        safe_delete(ws.dataset_dir / "marked", ws)
    assert outside.exists() and (ws.dataset_dir / "marked").exists()


def test_safe_delete_never_follows_a_symlink(ws, tmp_path):
    run = _make_run(ws, "real")
    (ws.models("cpt") / "alias").symlink_to(run)
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / RUN_MARKER).write_text("x")
    (ws.models("ift") / "evil").symlink_to(outside)
    for path in ("cpt/alias", "ift/evil"):
        with pytest.raises(AccessError):
            safe_delete(path, ws)
    assert run.exists() and outside.exists()


def test_safe_delete_missing(ws):
    with pytest.raises(NotFoundError):
        safe_delete("cpt/nothing-here", ws)


def test_overlong_names_are_user_errors(ws):
    # Found by fuzzing: the OS refuses such names (ENAMETOOLONG) on every later file operation.
    for path in ("x" * 300, "dataset/" + "y" * 256, "a/" * 2100):
        with pytest.raises(UserError, match="too long"):
            confine_read(path, ws)
