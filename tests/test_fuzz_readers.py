"""Hypothesis against the data readers: arbitrary bytes in every supported format never crash
a read; a bad file becomes a skipped entry with a reason, and the rest of the folder is read."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forgellm.data.readers import SUPPORTED_SUFFIXES, list_sources, read_source
from forgellm.data.stats import DataReport

MAX_FILE_BYTES = 1 << 20
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that look like the formats, to get past the first parser line and into the deeper paths.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
jsonl_bytes = st.lists(json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40), max_size=8).map(
    b"\n".join
)
csv_bytes = st.lists(
    st.lists(st.text(max_size=12), max_size=5).map(lambda cells: ",".join(cells).encode("utf-8", "surrogatepass")),
    max_size=8,
).map(b"\n".join)
format_prefixes = st.sampled_from([b"", b"%PDF-1.4\n", b"PAR1", b"<html><body>", b"\xef\xbb\xbf", b"{\"text\": "])
fuzz_bytes = st.one_of(
    st.binary(max_size=2048), jsonl_bytes, csv_bytes, st.tuples(format_prefixes, st.binary(max_size=512)).map(b"".join)
)


def read_folder(files: dict[str, bytes]) -> tuple[list, DataReport]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in files.items():
            (root / name).write_bytes(data)
        report = DataReport()
        rows = [
            row
            for source in list_sources(root, report)
            for row in read_source(source, report, max_file_bytes=MAX_FILE_BYTES)
        ]
        return rows, report


@FUZZ
@given(suffix=st.sampled_from(sorted(SUPPORTED_SUFFIXES)), data=fuzz_bytes)
def test_arbitrary_bytes_never_crash_a_reader(suffix, data):
    rows, report = read_folder({f"input{suffix}": data, "good.txt": b"a good document\n"})
    # The good file is always read, whatever happened to the fuzzed one.
    assert any(row.file == "good.txt" for row in rows)
    for skip in report.skipped:
        assert skip["reason"] and "Traceback" not in skip["reason"]
    for row in rows:
        assert isinstance(row.fields, dict)


@settings(FUZZ, max_examples=30)
@given(data=fuzz_bytes)
def test_arbitrary_datasets_folder_metadata_never_crashes(data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hf"
        folder.mkdir()
        (folder / "state.json").write_bytes(data)
        (folder / "dataset_info.json").write_bytes(data)
        report = DataReport()
        for source in list_sources(Path(tmp), report):
            list(read_source(source, report, max_file_bytes=MAX_FILE_BYTES))
        assert report.skipped, "a datasets folder made of random metadata cannot be read"
