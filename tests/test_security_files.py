"""The confinement rule of requests (`forgellm.access`) and the deletion rule, as functions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forgellm.access import Roots, check_name, request_model, request_path
from forgellm.errors import AccessError, NotFoundError, UserError
from forgellm.models.resolve import MODEL_MARKER
from forgellm.runs.layout import RUN_MARKER
from forgellm.security import safe_delete
from forgellm.workspace import Workspace


@pytest.fixture
def ws(workspace: Path) -> Workspace:
    return Workspace.current().ensure()


@pytest.fixture
def roots(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Roots:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return Roots.of(ws, listed="")


def test_paths_inside_are_resolved(ws, roots):
    (ws.dataset_dir / "a.txt").write_text("hi")
    assert request_path("dataset/a.txt", "f", roots, "read") == ws.dataset_dir / "a.txt"
    assert request_path(str(ws.dataset_dir / "a.txt"), "f", roots, "read") == ws.dataset_dir / "a.txt"
    assert request_path("models/cpt/new-run", "f", roots, "write") == ws.models("cpt") / "new-run"
    assert (
        request_path("a.txt", "f", roots, "read", base=ws.dataset_dir, within=ws.dataset_dir)
        == ws.dataset_dir / "a.txt"
    )


@pytest.mark.parametrize(
    "path", ["../outside", "dataset/../../outside", "/etc/passwd", "/", "dataset/../..", "dataset/./a", "/tmp/../etc"]
)
def test_escapes_refused_naming_the_field_without_resolved_paths(ws, roots, path):
    for access in ("read", "write", "model"):
        with pytest.raises(AccessError) as caught:
            request_path(path, "input_dir", roots, access)
        assert caught.value.field == "input_dir" and str(ws.root) not in str(caught.value)


def test_within_cannot_be_left(ws, roots):
    with pytest.raises(AccessError):
        request_path("../configs/x.yaml", "path", roots, "read", base=ws.dataset_dir, within=ws.dataset_dir)


def test_symlink_out_refused(ws, roots, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (ws.dataset_dir / "link.txt").symlink_to(secret)
    (ws.dataset_dir / "linkdir").symlink_to(tmp_path)
    for path in ("dataset/link.txt", "dataset/linkdir/secret.txt"):
        with pytest.raises(AccessError) as caught:
            request_path(path, "path", roots, "read")
        assert str(tmp_path) not in str(caught.value)


def test_nul_tilde_backslash_and_loops_are_user_errors(ws, roots):
    for path in ("dataset/a\x00b", "~/x", "~root", "a\\..\\b", ""):
        with pytest.raises(UserError):
            request_path(path, "path", roots, "read")
    (ws.dataset_dir / "loop").symlink_to(ws.dataset_dir / "loop")
    with pytest.raises(UserError):
        request_path("dataset/loop/x", "path", roots, "read")


def test_listed_roots_and_the_model_cache(ws, tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    snapshot = cache / "models--org--m" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FORGELLM_ROOTS", f"{corpora}{os.pathsep}")
    roots = Roots.of(ws)
    assert roots.listed == (corpora.resolve(),)
    assert request_path(str(snapshot), "model", roots, "model") == snapshot.resolve()
    assert request_model(str(snapshot), "model", roots) == str(snapshot)
    for access in ("read", "write"):  # the cache holds models, nothing else
        with pytest.raises(AccessError):
            request_path(str(snapshot), "f", roots, access)
    assert request_path(str(corpora / "a"), "input_dir", roots, "read") == corpora.resolve() / "a"
    assert request_path(str(corpora / "runs"), "output_dir", roots, "write") == corpora.resolve() / "runs"
    with pytest.raises(AccessError):  # a relative path never climbs into either
        request_path(os.path.relpath(snapshot, ws.root), "model", roots, "model")
    with pytest.raises(UserError, match="not an absolute path"):
        Roots.of(ws, listed="relative/dir")


@pytest.mark.parametrize(
    "name, kinds, ok",
    [
        ("run1", None, True),
        ("cpt/run1", ("cpt", "ift"), True),
        ("cpt/run1", None, False),
        ("base/m", ("cpt", "ift"), False),
        ("cpt/../base/m", ("cpt", "ift"), False),
        ("cpt/a/b", ("cpt",), False),
        ("..", None, False),
        (".", None, False),
        ("/abs", None, False),
        ("cpt/", ("cpt",), False),
    ],
)
def test_names(name, kinds, ok):
    if ok:
        assert check_name(name, "name", kinds=kinds) == name
    else:
        with pytest.raises(UserError) as caught:
            check_name(name, "name", kinds=kinds)
        assert caught.value.field == "name"


def _make_run(ws: Workspace, name: str, marker: str | None = RUN_MARKER, kind: str = "cpt") -> Path:
    run = ws.models(kind) / name
    (run / "checkpoints" / "step_000001").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    if marker:
        (run / marker).write_text("x")
    return run


def test_safe_delete_removes_marked_run_and_published_model(ws):
    run = _make_run(ws, "run1")
    assert safe_delete("cpt/run1", ws) == run and not run.exists()
    model = ws.models("published") / "m1"
    model.mkdir()
    (model / MODEL_MARKER).write_text("x")
    safe_delete("published/m1", ws)
    assert not model.exists()


def test_safe_delete_refuses_unmarked_or_wrongly_marked_folders(ws):
    run = _make_run(ws, "foreign", marker=None)
    with pytest.raises(AccessError, match="not created by ForgeLLM"):
        safe_delete("cpt/foreign", ws)
    published = _make_run(ws, "run-marker-only", kind="published")  # a run marker does not make a model
    with pytest.raises(AccessError):
        safe_delete("published/run-marker-only", ws)
    assert run.exists() and published.exists()


@pytest.mark.parametrize(
    "name",
    [
        "cpt",
        ".",
        "",
        "cpt/run1/checkpoints/step_000001",
        "../dataset",
        "/tmp",
        "base/SmolLM",
        "cpt/../base/SmolLM",
        "cpt/./run1",
        "dataset/x",
    ],
)
def test_safe_delete_refuses_other_targets(ws, name):
    run = _make_run(ws, "run1")
    base = ws.models("base") / "SmolLM"
    base.mkdir()
    (base / MODEL_MARKER).write_text("imported")  # base models carry the model marker too
    with pytest.raises(UserError):
        safe_delete(name, ws)
    assert run.exists() and base.exists() and ws.dataset_dir.exists()


def test_safe_delete_never_follows_a_symlink(ws, tmp_path):
    run = _make_run(ws, "real")
    (ws.models("cpt") / "alias").symlink_to(run)
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / RUN_MARKER).write_text("x")
    (ws.models("ift") / "evil").symlink_to(outside)
    for name in ("cpt/alias", "ift/evil"):
        with pytest.raises(AccessError):
            safe_delete(name, ws)
    assert run.exists() and outside.exists()


def test_safe_delete_missing(ws):
    with pytest.raises(NotFoundError):
        safe_delete("cpt/nothing-here", ws)


def test_overlong_names_are_user_errors(ws, roots):
    # Found by fuzzing: the OS refuses such names (ENAMETOOLONG) on every later file operation.
    for path in ("x" * 300, "dataset/" + "y" * 256, "a/" * 2100):
        with pytest.raises(UserError, match="too long"):
            request_path(path, "path", roots, "read")


def test_workspace_folders_linked_to_another_disk_are_the_workspace(workspace, tmp_path):
    bigdisk = tmp_path / "bigdisk" / "models"
    (bigdisk / "base" / "m").mkdir(parents=True)
    (workspace / "models").symlink_to(bigdisk)
    roots = Roots.of(Workspace.current().ensure(), listed="")
    assert request_path("models/base/m", "model", roots, "model") == (bigdisk / "base" / "m").resolve()
    with pytest.raises(AccessError):
        request_path(str(tmp_path / "bigdisk"), "model", roots, "model")
