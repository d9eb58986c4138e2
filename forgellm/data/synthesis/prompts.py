"""What the teacher is asked, and how its answers are read.

The prompts are written for a capable instruct model (7B and up): one call asks for several
question/answer pairs about a chunk, one call per paraphrase asks for the chunk rewritten in
a given style. Both ask for JSON only, with the exact shape shown, and the reader is lenient
about what models wrap around JSON (code fences, a sentence before it). A reply with no JSON
of the expected shape is counted as ``not_json`` and skipped.

Why these rules:
- Questions must name their subject ("When was Orlemund founded?", never "When was the town in
  the passage founded?"): the model is asked later without the passage.
- Answers are one or two full sentences in the chunk's own words: they teach the fact and
  pass the grounding check; a bare "1642" teaches little.
- Paraphrases keep every fact, name and number, in another order and wording (the point of
  rewriting, "Physics of Language Models, Part 3.1"): one styles list spreads them out.
"""

from __future__ import annotations

import json
import re
from typing import Any

from forgellm.engines.base import Message

QA_SYSTEM = (
    "You write study questions about a document and answer them from the document alone. You reply with JSON only."
)

QA_PROMPT = """Document:
\"\"\"
{chunk}
\"\"\"

Write {count} different questions that this document answers, each with its answer.
Rules:
- Each question asks about one fact stated in the document (a name, date, number, place, cause, purpose or relation).
- Each question names its subject in full, so that it can be understood without the document. Never write "the document", "the text" or "the passage".
- Each answer is one or two complete sentences that use the document's own words. Add nothing the document does not say.
- Cover different facts; do not ask the same thing twice.

Reply with this JSON and nothing else:
{{"pairs": [{{"question": "...", "answer": "..."}}]}}"""

PARAPHRASE_SYSTEM = "You rewrite documents faithfully in other words. You reply with JSON only."

PARAPHRASE_PROMPT = """Document:
\"\"\"
{chunk}
\"\"\"

Rewrite this document {style}.
Rules:
- Keep every fact, name, date and number exactly as in the document; do not add any fact.
- Change the wording and the order of sentences; do not copy whole sentences.
- Write plain prose of about the same length as the document.

Reply with this JSON and nothing else:
{{"paraphrase": "..."}}"""

#: One style per paraphrase, in this order (repeated when more paraphrases are asked for).
PARAPHRASE_STYLES = (
    "as an encyclopedia entry",
    "as a teacher would explain it to a student",
    "as a concise summary of facts, one fact per sentence",
    "as a passage of a guidebook",
    "as a news report",
)


def qa_messages(chunk: str, count: int) -> list[Message]:
    return [
        {"role": "system", "content": QA_SYSTEM},
        {"role": "user", "content": QA_PROMPT.format(chunk=chunk, count=count)},
    ]


def paraphrase_messages(chunk: str, number: int) -> list[Message]:
    style = PARAPHRASE_STYLES[number % len(PARAPHRASE_STYLES)]
    return [
        {"role": "system", "content": PARAPHRASE_SYSTEM},
        {"role": "user", "content": PARAPHRASE_PROMPT.format(chunk=chunk, style=style)},
    ]


def parse_pairs(reply: str) -> list[tuple[str, str]] | None:
    """The (question, answer) pairs of a reply; None when it holds no JSON of that shape."""
    data = _json_in(reply)
    if isinstance(data, dict):
        data = data.get("pairs", data.get("questions", [data] if "question" in data else None))
    if not isinstance(data, list):
        return None
    pairs = []
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("question"), str) and isinstance(item.get("answer"), str):
            question, answer = item["question"].strip(), item["answer"].strip()
            if question and answer:
                pairs.append((question, answer))
    return pairs or None


def parse_paraphrase(reply: str) -> str | None:
    """The paraphrase of a reply; None when it holds no JSON of that shape."""
    data = _json_in(reply)
    text = data.get("paraphrase") if isinstance(data, dict) else None
    return text.strip() if isinstance(text, str) and text.strip() else None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _json_in(reply: str) -> Any:
    """The first JSON object or list in ``reply``: the whole reply, a fenced block, or the span from
    the first brace or bracket to its match."""
    candidates = [reply.strip(), *(m.group(1).strip() for m in _FENCE.finditer(reply))]
    decoder = json.JSONDecoder()
    for text in candidates:
        for start, char in enumerate(text):
            if char in "{[":
                try:
                    return decoder.raw_decode(text, start)[0]
                except ValueError:
                    continue
    return None
