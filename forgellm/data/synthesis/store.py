"""The output folder of a synthesis, and what makes an interrupted run resumable.

    OUT/ift/qa.jsonl            question/answer chats ({"messages": [...], "source": {...}})
    OUT/cpt/paraphrases.jsonl   paraphrased chunks ({"text": ..., "style": ..., "source": {...}})
    OUT/summary.json            counts, settings and state (running, done, interrupted, failed)
    OUT/.progress.json          the chunks done, the outputs' sizes then, the counts

A chunk's records are appended (flushed and synced) before the progress file, written
atomically, says the chunk is done. A run stopped anywhere, even killed in the middle of a
write, therefore resumes cleanly: the outputs are cut back to the sizes the progress file
recorded (dropping the records of a chunk that was not finished), and every chunk it lists is
skipped without asking the teacher again.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from forgellm.errors import UserError
from forgellm.jsonio import read_json, write_json_atomic

QA_FILE = "ift/qa.jsonl"
PARAPHRASE_FILE = "cpt/paraphrases.jsonl"
PROGRESS_FILE = ".progress.json"
SUMMARY_FILE = "summary.json"
FORMAT_VERSION = 1

_NON_WORDS = re.compile(r"[\W_]+")


def dedupe_key(text: str) -> str:
    """Texts that differ only in case, spacing and punctuation are the same."""
    return _NON_WORDS.sub(" ", text.lower()).strip()


class OutputFolder:
    def __init__(self, out: Path, identity: dict[str, Any]):
        """Open ``out`` for a synthesis described by ``identity`` (the settings a resumed run must share)."""
        self.out = out
        self.identity = identity
        out.mkdir(parents=True, exist_ok=True)
        for name in (QA_FILE, PARAPHRASE_FILE):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
        saved = read_json(out / PROGRESS_FILE)
        if saved is not None and saved.get("version") == FORMAT_VERSION:
            self._check_same(saved.get("identity") or {})
            self.done: set[str] = set(saved.get("done", []))
            self.counts: Counter = Counter(saved.get("counts", {}))
            sizes = saved.get("sizes", {})
        else:
            for name in (QA_FILE, PARAPHRASE_FILE):  # never cut records this folder's progress did not write
                if (out / name).exists() and (out / name).stat().st_size:
                    raise UserError(
                        f"{out / name} exists but {out} has no synthesis progress file: give another "
                        f"--out, or move that file away"
                    )
            self.done, self.counts, sizes = set(), Counter(), {}
        for name in (QA_FILE, PARAPHRASE_FILE):
            _cut_to(out / name, int(sizes.get(name, 0)))
        self.seen_questions = {dedupe_key(r["messages"][0]["content"]) for r in self.records(QA_FILE)}
        self.seen_paraphrases = {dedupe_key(r["text"]) for r in self.records(PARAPHRASE_FILE)}

    def _check_same(self, saved: dict[str, Any]) -> None:
        changed = [f"{k} was {saved.get(k)!r}, now {v!r}" for k, v in self.identity.items() if saved.get(k) != v]
        if changed:
            raise UserError(
                f"{self.out} holds a synthesis made with other settings ({'; '.join(changed)}): "
                f"rerun with the same settings to resume it, or give another --out"
            )

    def records(self, name: str) -> list[dict[str, Any]]:
        """The records of one output file."""
        path = self.out / name
        if not path.exists():
            return []
        records = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise UserError(
                        f"{path}:{number} is not a JSON record (edited by hand?): fix or remove that "
                        f"line, or give another --out"
                    ) from None
        return records

    def commit(self, key: str, qa: list[dict[str, Any]], paraphrases: list[dict[str, Any]], counts: Counter) -> None:
        """Append one chunk's records, then mark the chunk done (in that order: see the module doc)."""
        for name, records in ((QA_FILE, qa), (PARAPHRASE_FILE, paraphrases)):
            if records:
                with open(self.out / name, "a", encoding="utf-8") as fh:
                    fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                    fh.flush()
                    os.fsync(fh.fileno())
        self.done.add(key)
        self.counts.update(counts)
        write_json_atomic(
            self.out / PROGRESS_FILE,
            {
                "version": FORMAT_VERSION,
                "identity": self.identity,
                "done": sorted(self.done),
                "sizes": {name: (self.out / name).stat().st_size for name in (QA_FILE, PARAPHRASE_FILE)},
                "counts": dict(self.counts),
                "updated": time.time(),
            },
        )

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.out / SUMMARY_FILE, summary)


def _cut_to(path: Path, size: int) -> None:
    """Create ``path``, or cut it back to ``size`` bytes (what the last finished chunk left)."""
    with open(path, "a+b") as fh:
        if fh.seek(0, os.SEEK_END) > size:
            fh.truncate(size)
