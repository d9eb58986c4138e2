"""Every reader, through `prepare_dataset`: each format's text reaches the packed sequences,
and nothing outside the dataset folder is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.data_helpers import documents_of, load_tokenizer, minimal_pdf, prepare, prose, write_files


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def trained_texts(data, tokenizer) -> list[str]:
    """The documents on both sides of the split, decoded."""
    docs = documents_of(data.train, tokenizer.eos_token_id) + documents_of(data.val, tokenizer.eos_token_id)
    return [tokenizer.decode(list(doc)) for doc in docs]


def test_every_format_is_read(tmp_path, workspace, tokenizer):
    import pandas as pd

    texts = {
        name: prose(seed)
        for seed, name in enumerate(["txt", "md", "rst", "html", "pdf", "jsonl", "json", "csv", "parquet", "datasets"])
    }
    root = write_files(
        tmp_path / "ds",
        {
            "a.txt": texts["txt"],
            "sub/b.md": f"# Title\n\n{texts['md']}",
            "sub/deeper/c.rst": texts["rst"],
            "d.html": f"<html><head><style>p {{color: red}}</style><script>var x = 1;</script></head>"
            f"<body><p>{texts['html']}</p></body></html>",
            "e.pdf": minimal_pdf(texts["pdf"]),
            "f.jsonl": [{"text": texts["jsonl"], "id": 1}],
            "g.json": [{"text": texts["json"]}],
        },
    )
    pd.DataFrame({"body": [texts["csv"]], "n": [1]}).to_csv(root / "h.csv", index=False)
    pd.DataFrame({"body": [texts["parquet"]]}).to_parquet(root / "i.parquet")
    from datasets import Dataset

    Dataset.from_dict({"body": [texts["datasets"]]}).save_to_disk(str(root / "hf"))
    # csv, parquet and datasets name their column "body"; the other files say "text".
    for name in ("f.jsonl", "g.json"):
        (root / name).write_text((root / name).read_text().replace('"text"', '"body"'))

    data = prepare(root, tokenizer, workspace, text_column="body", validation_split=0.0)
    stats = data.stats
    assert stats["files"] == 10 and stats["skipped"] == [] and stats["documents"] == 10
    got = trained_texts(data, tokenizer)
    for fmt, text in texts.items():
        assert any(text in doc for doc in got), f"{fmt} text missing from the packed sequences"
    html_doc = next(doc for doc in got if texts["html"] in doc)
    assert "color" not in html_doc and "var x" not in html_doc  # text only: no style or script
    assert any(doc.startswith("# Title") for doc in got)


def test_missing_text_column_is_reported_per_row(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {"a.jsonl": [{"text": prose(1)}, {"body": prose(2)}, {"text": prose(3)}]})
    stats = prepare(root, tokenizer, workspace).stats
    assert stats["documents"] == 2
    assert stats["skipped"] == [{"file": "a.jsonl", "line": 2, "reason": stats["skipped"][0]["reason"]}]
    assert "'text'" in stats["skipped"][0]["reason"] and "text_column" in stats["skipped"][0]["reason"]


def test_symlinks_that_leave_the_folder_are_not_followed(tmp_path, workspace, tokenizer):
    outside = write_files(tmp_path / "outside", {"secret.txt": prose(10), "dir/other.txt": prose(11)})
    root = write_files(tmp_path / "ds", {"inside.txt": prose(12), "sub/kept.txt": prose(13)})
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside / "dir", root / "linkdir")
    os.symlink(root / "sub" / "kept.txt", root / "alias.txt")  # stays inside: followed
    os.symlink(root, root / "sub" / "loop")  # a loop back to the root: walked once
    data = prepare(root, tokenizer, workspace, validation_split=0.0)
    got = " ".join(trained_texts(data, tokenizer))
    assert prose(10) not in got and prose(11) not in got
    assert prose(12) in got and prose(13) in got
    reasons = {s["file"]: s["reason"] for s in data.stats["skipped"]}
    assert "leaves the dataset folder" in reasons["link.txt"] and "leaves the dataset folder" in reasons["linkdir"]
    assert data.stats["duplicates_removed"] == 1  # alias.txt is kept.txt again


def test_hidden_files_are_ignored_and_unknown_types_reported(tmp_path, workspace, tokenizer):
    root = write_files(
        tmp_path / "ds",
        {"a.txt": prose(1), ".hidden.txt": prose(2), ".git/x.txt": prose(3), "notes.docx": b"PK\x03\x04"},
    )
    stats = prepare(root, tokenizer, workspace).stats
    assert stats["files"] == 1
    assert [s["file"] for s in stats["skipped"]] == ["notes.docx"]
    assert "unsupported file type .docx" in stats["skipped"][0]["reason"]


def test_a_dataset_folder_given_directly_is_read(tmp_path, workspace, tokenizer):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "hf"
    DatasetDict(
        {"train": Dataset.from_dict({"text": [prose(1), prose(2)]}), "test": Dataset.from_dict({"text": [prose(3)]})}
    ).save_to_disk(str(folder))
    data = prepare(folder, tokenizer, workspace)
    assert data.stats["documents"] == 3 and data.stats["skipped"] == []


def test_bom_and_windows_newlines_are_normalised(tmp_path, workspace, tokenizer):
    text = prose(4)
    root = write_files(tmp_path / "ds", {"a.txt": b"\xef\xbb\xbf" + text.replace(" ", " \r\n", 3).encode()})
    data = prepare(root, tokenizer, workspace, validation_split=0.0)
    (doc,) = trained_texts(data, tokenizer)
    assert "\r" not in doc and "\ufeff" not in doc and doc.startswith(text.split(" ")[0])
    assert Path(data.path).is_dir()
