"""The data-stats line of the web app's Training form: `/api/datasets/stats` runs `forgellm data stats`
with the data settings the form sends (the config keys it shares with `forgellm data`), not the
command's defaults; the schema marks which keys those are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forgellm.data.settings import SHARED_KEYS, DataSettings
from forgellm.training.config import TrainingConfig
from forgellm.web.app import create_app
from tests.test_data_validation import one_line_document
from tests.training_helpers import prepared_data
from tests.web_helpers import free_port


@pytest.fixture
def client(workspace: Path, tiny_model_dir: Path):
    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    app = create_app(
        {"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    )
    return app.test_client()


def test_shared_settings_have_one_default():
    for key in SHARED_KEYS:
        assert DataSettings.model_fields[key].default == TrainingConfig.model_fields[key].default, key
    assert DataSettings.model_fields["data_mixture_ratio"].default == 0.8


def test_stats_use_the_forms_values(client, workspace):
    one_line_document(workspace / "dataset" / "one")
    one_line_document(workspace / "dataset" / "held", words=500, offset=3)
    schema = {f["name"]: f for f in client.get("/api/config/schema").get_json()["fields"]}
    assert {name for name, f in schema.items() if f["data"]} == set(SHARED_KEYS)

    form = {
        "path": "one",
        "mode": "cpt",
        "model": "tiny",
        "max_seq_length": "48",
        "validation_split": "0.25",
        "data_mixture_ratio": "1",
        "dedupe": "false",
        "seed": "7",
    }
    answer = client.get("/api/datasets/stats", query_string=form)
    assert answer.status_code == 200, answer.get_json()
    stats = answer.get_json()["stats"]
    assert stats["seq_length"] == 48 and "mixture" not in stats
    assert stats["settings"]["validation_split"] == 0.25 and stats["settings"]["dedupe"] is False
    assert stats["settings"]["seed"] == 7 and stats["validation"]["source"] == "packed_sequences"
    rows = stats["sequences"]["train"] + stats["sequences"]["val"]
    assert stats["sequences"]["val"] == round(rows * 0.25)

    # A validation folder named as in a training config (relative to the workspace).
    held = client.get("/api/datasets/stats", query_string={**form, "validation_dir": "dataset/held"}).get_json()
    assert held["stats"]["validation"]["source"] == "validation_dir"
    assert held["stats"]["validation"]["path"] == str((workspace / "dataset" / "held").resolve())

    # Without a ratio in the form, the training default (0.8) mixes the general data in.
    mixed = client.get(
        "/api/datasets/stats",
        query_string={"path": "one", "model": "tiny", "max_seq_length": "48", "general_data_dir": "dataset/held"},
    )
    assert mixed.status_code == 200, mixed.get_json()
    mixture = mixed.get_json()["stats"]["mixture"]
    assert mixture["domain_ratio"] == 0.8 and mixture["general_sequences"] > 0
    assert mixed.get_json()["replay_pending"] is False


def test_a_replay_set_is_not_sampled_for_the_stats_line(client, workspace):
    """data_mixture_ratio < 1 without general_data_dir samples general text from the model when the
    run starts (minutes): the line counts the domain data alone and says what share replay takes."""
    one_line_document(workspace / "dataset" / "one")
    form = {"path": "one", "mode": "cpt", "model": "tiny", "max_seq_length": "48"}
    domain = client.get("/api/datasets/stats", query_string={**form, "data_mixture_ratio": "1"}).get_json()
    assert (domain["replay_pending"], domain["replay_share"]) == (False, 0.0)
    for ratio in ({"data_mixture_ratio": "0.8"}, {}):  # given, or the training default
        answer = client.get("/api/datasets/stats", query_string={**form, **ratio})
        assert answer.status_code == 200, answer.get_json()
        got = answer.get_json()
        assert (got["replay_pending"], got["replay_share"]) == (True, 0.2)
        assert "mixture" not in got["stats"] and got["stats"]["sequences"] == domain["stats"]["sequences"]
    assert list((workspace / "data").glob("replay-*")) == []  # nothing was sampled


def test_preference_pairs_never_wait_for_a_replay_set(client, workspace):
    records = [{"prompt": f"Who founded town {i}?", "chosen": f"Tarrow founded town {i}.", "rejected": "Nobody."}
               for i in range(20)]  # fmt: skip
    (workspace / "dataset" / "pairs").mkdir(parents=True)
    (workspace / "dataset" / "pairs" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    answer = client.get(
        "/api/datasets/stats",
        query_string={"path": "pairs", "mode": "preference", "model": "tiny", "data_mixture_ratio": "0.5"},
    )
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    assert (got["replay_pending"], got["replay_share"]) == (False, 0.0) and got["stats"]["pairs"]["train"] > 0


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"max_seq_length": "8"}, 400, "max_seq_length"),
        ({"data_mixture_ratio": "0"}, 400, "data_mixture_ratio"),
        ({"ift_format": "csv"}, 400, "ift_format"),
        ({"validation_dir": "dataset/missing"}, 400, "validation_dir"),
        ({"general_data_dir": "../outside"}, 403, "general_data_dir"),
    ],
)
def test_a_refused_form_value_names_its_field(client, workspace, query, status, field):
    one_line_document(workspace / "dataset" / "one")
    answer = client.get("/api/datasets/stats", query_string={"path": "one", "model": "tiny", **query})
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"]["field"] == field


def test_a_folder_of_prepared_splits_reports_what_a_run_trains_on(client, workspace):
    """A folder holding ``train.tokens.npy`` and ``val.tokens.npy`` is trained on as it is (the
    trainer and the estimate take it so): its stats are its splits, not "no usable documents"."""
    bare = prepared_data((workspace / "dataset" / "bare").resolve(), train=21, val=5, length=32)
    answer = client.get("/api/datasets/stats", query_string={"path": "bare", "mode": "cpt", "model": "tiny"})
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    assert got["stats"]["sequences"] == {"train": 21, "val": 5} and got["stats"]["seq_length"] == 32
    assert got["stats"]["prepared_path"] == str(bare)
    # Nothing is mixed into prepared splits: no replay set waits for the run at the default ratio.
    assert (got["replay_pending"], got["replay_share"]) == (False, 0.0)

    # A cache entry the pipeline wrote, copied into dataset/: its own stats, counted as they were made.
    one_line_document(workspace / "dataset" / "one")
    made = client.get("/api/datasets/stats", query_string={"path": "one", "model": "tiny", "max_seq_length": "48"})
    made_stats = made.get_json()["stats"]
    shutil.copytree(made_stats["cache"]["path"], workspace / "dataset" / "copied")
    answer = client.get("/api/datasets/stats", query_string={"path": "copied", "model": "tiny"})
    assert answer.status_code == 200, answer.get_json()
    copied = answer.get_json()["stats"]
    assert copied["sequences"] == made_stats["sequences"] and copied["seq_length"] == 48
    assert (copied["documents"], copied["train_tokens"]) == (made_stats["documents"], made_stats["train_tokens"])
