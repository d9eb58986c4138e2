"""Shared helpers for the data pipeline tests: the embedded tokenizer, folders of files, a tiny PDF."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.data import DataSettings, PreparedData, prepare_dataset
from forgellm.data.tokenizing import EncoderSpec
from tests.tiny_model import EMBEDDED_DIR


def load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(EMBEDDED_DIR))


def write_files(root: Path, files: dict[str, str | bytes | list[dict]]) -> Path:
    """Write ``{relative path: text | bytes | records (as JSON lines)}`` under ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            content = "".join(json.dumps(r) + "\n" for r in content)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def prepare(root: Path, tokenizer: Any, workspace: Path, **settings: Any) -> PreparedData:
    """Domain data only unless ``settings`` asks for a mixture (the default ratio needs a replay model)."""
    return prepare_dataset(
        DataSettings(input_dir=root, **{"data_mixture_ratio": 1.0, **settings}), tokenizer, workspace
    )


def documents_of(sequences: Any, eos_id: int) -> list[tuple[int, ...]]:
    """The documents of a CPT split, as token tuples cut at EOS (padding dropped)."""
    flat = np.asarray(sequences.tokens).reshape(-1)[np.asarray(sequences.mask).reshape(-1) == 1]
    docs, start = [], 0
    for end in np.flatnonzero(flat == eos_id):
        docs.append(tuple(int(t) for t in flat[start:end]))
        start = end + 1
    return docs


def prose(seed: int, words: int = 120) -> str:
    """A distinct, clean paragraph (passes the quality filters, is no near duplicate of another seed)."""
    rng = np.random.default_rng(seed)
    vocab = (
        "river harbour island mountain village market festival founder winter summer bread stone bridge "
        "lantern orchard meadow ferry tower garden school song storm valley north south eastern western "
        "quiet bright ancient narrow golden wooden merchant fisher weaver potter baker sailor"
    ).split()
    return " ".join(rng.choice(vocab, size=words)).capitalize() + "."


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica (hand-built, so no PDF writer is needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@dataclass(frozen=True)
class DyingEncoderSpec(EncoderSpec):
    """A spec whose worker process dies while building its encoder (as a killed worker would)."""

    def build(self, threads: int = 1) -> Any:
        os._exit(3)
