"""Question answering as a metric: held-out questions answered greedily, scored by containment.

One reader of QA files (``forgellm eval --qa`` and ``eval_qa`` during training read the same
JSONL records) and one scorer. A `QASet` holds the questions as prompt token ids, formatted
as the model is asked in chat (chat template for instruct models); it is answered through any
batched greedy generator (`forgellm.engines.batched`), a loaded model's or a training model's.

An answer counts as correct when its first sentence (what a user reads as the answer) contains the
expected answer or one of its aliases, both normalised (case, accents, punctuation, articles,
spaces). Only the first sentence, because a model that goes on writing would otherwise be scored
right for naming the fact among others: a CPT model asked who founded a town often answers with
the wrong founder and then recites the town's document, the right name included.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.engines.batched import GreedyBatch
from forgellm.errors import NotFoundError, UserError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
DEFAULT_BATCH_SIZE = 16  # questions per generation batch: most of the speed-up, bounded memory


def normalise(text: str) -> str:
    """Lower case, no accents, punctuation or articles, single spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (``.``, ``!`` or ``?`` before a space, or a line break)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def is_correct(answer: str, expected: str | list[str]) -> bool:
    options = [expected] if isinstance(expected, str) else expected
    got = f" {normalise(first_sentence(answer))} "
    return any(f" {normalise(o)} " in got for o in options if normalise(o))


def read_qa(path: Path) -> list[dict[str, Any]]:
    """QA items from JSONL, or from every ``*.jsonl`` of a folder: ``{"question": ..., "answer": ...}``;
    ``answer`` may be a list, and ``aliases`` lists further accepted answers. Each item keeps the
    name of its file (``qa_file``, without ``.jsonl``): results are also reported per file."""
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise NotFoundError(f"QA folder {path} has no .jsonl file of question/answer records")
        return [item for file in files for item in read_qa(file)]
    if not path.is_file():
        raise NotFoundError(f"QA file {path} not found; pass --qa with a JSONL file of question/answer records")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{number} is not valid JSON") from None
        if not isinstance(record, dict) or "question" not in record or "answer" not in record:
            raise UserError(f"{path}:{number} needs the keys question and answer")
        answers = record["answer"] if isinstance(record["answer"], list) else [record["answer"]]
        aliases = record.get("aliases") or []
        record["accepted"] = [str(a) for a in [*answers, *(aliases if isinstance(aliases, list) else [aliases])]]
        record["qa_file"] = path.stem
        items.append(record)
    if not items:
        raise UserError(f"{path} has no questions")
    return items


@dataclass
class QAResult:
    correct: int
    total: int
    answers: list[dict[str, Any]] = field(default_factory=list)  # question, expected, answer, correct, qa_file

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def by_file(self) -> dict[str, dict[str, Any]]:
        """``{file: {correct, total, accuracy}}`` when the questions came from more than one file, else {}."""
        files: dict[str, list[int]] = {}
        for answer in self.answers:
            counts = files.setdefault(answer.get("qa_file", ""), [0, 0])
            counts[0] += answer["correct"]
            counts[1] += 1
        if len(files) < 2:
            return {}
        return {name: {"correct": c, "total": t, "accuracy": c / t} for name, (c, t) in files.items()}


def describe_qa(event: dict[str, Any]) -> str:
    """`` QA 47.6% (30/63: chat-facts 25/42, document-facts 5/21)`` for an eval event that has QA
    scores, else ``""``: the one wording of a QA score in the terminal."""
    if event.get("qa_accuracy") is None:
        return ""
    files = "".join(
        f"{', ' if i else ': '}{name} {f['correct']}/{f['total']}"
        for i, (name, f) in enumerate((event.get("qa_files") or {}).items())
    )
    return f" QA {event['qa_accuracy']:.1%} ({event['qa_correct']}/{event['qa_total']}{files})"


class QASet:
    """Questions ready to ask a model whose tokenizer is ``tokenizer``."""

    def __init__(self, items: list[dict[str, Any]], tokenizer: Any, stop_ids: set[int] | None = None):
        from forgellm.engines.prompting import encode_prompt, format_prompt

        self.items = items
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids or set()  # end-of-sequence ids, for generators that need them given
        self.prompts = [
            encode_prompt(tokenizer, format_prompt(tokenizer, [{"role": "user", "content": item["question"]}]))
            for item in items
        ]

    def __len__(self) -> int:
        return len(self.items)

    def answer(self, generate: GreedyBatch, max_tokens: int, batch_size: int = DEFAULT_BATCH_SIZE) -> QAResult:
        """Answer every question with ``generate``, ``batch_size`` at a time (1: one by one), and score."""
        # Batches of similar length waste less compute on padding; answers go back in file order.
        order = sorted(range(len(self.prompts)), key=lambda i: len(self.prompts[i]))
        generated: dict[int, list[int]] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for index, ids in zip(chunk, generate([self.prompts[i] for i in chunk], max_tokens)):
                generated[index] = ids
        result = QAResult(correct=0, total=len(self.items))
        for index, item in enumerate(self.items):
            answer = self.tokenizer.decode(generated[index], skip_special_tokens=True).strip()
            ok = is_correct(answer, item["accepted"])
            result.correct += ok
            result.answers.append(
                {
                    "question": item["question"],
                    "expected": item["answer"],
                    "answer": answer,
                    "correct": ok,
                    "qa_file": item.get("qa_file", ""),
                }
            )
        return result
