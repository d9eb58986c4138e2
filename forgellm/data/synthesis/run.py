"""The synthesis loop: for each chunk not done yet, ask the teacher, check, dedupe, save."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forgellm.data.synthesis import prompts
from forgellm.data.synthesis.chunks import Chunk, read_chunks
from forgellm.data.synthesis.grounding import ChunkIndex
from forgellm.data.synthesis.store import PARAPHRASE_FILE, QA_FILE, OutputFolder, dedupe_key
from forgellm.data.synthesis.teachers import Sampling, Teacher, TeacherError
from forgellm.errors import ForgeError, UserError

PARAPHRASE_MIN_SHARE = 0.3  # a "paraphrase" under this share of the chunk's words dropped most of its facts
SAMPLES = 5  # records shown in the summary (the web app's Datasets tab)


@dataclass(frozen=True)
class SynthesisOptions:
    source: Path
    out: Path
    questions_per_chunk: int = 3
    paraphrases: int = 2
    chunk_chars: int = 2000
    text_column: str = "text"
    min_grounding: float = 0.8  # share of an answer's content words that must be in its chunk
    sampling: Sampling = Sampling()

    def check(self) -> SynthesisOptions:
        """Raise `UserError` naming the first option out of range, or an --out that would be read as input."""
        if self.questions_per_chunk < 0 or self.paraphrases < 0 or self.questions_per_chunk + self.paraphrases == 0:
            raise UserError("--questions-per-chunk and --paraphrases must be >= 0, and one of them > 0")
        if self.chunk_chars < 200:
            raise UserError(f"--chunk-chars {self.chunk_chars} is too small: give at least 200 characters")
        if not 0 < self.min_grounding <= 1:
            raise UserError(f"--min-grounding {self.min_grounding} is out of range: give a share in (0, 1]")
        source, out = self.source.resolve(), self.out.resolve()
        if source.is_dir() and (out == source or source in out.parents):
            raise UserError(
                f"--out {self.out} is inside SOURCE {self.source}: its records would be read as "
                f"documents next time; pick a folder outside it"
            )
        return self

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (the chunks and what each is asked)."""
        return {
            "source": str(self.source.resolve()),
            "chunk_chars": self.chunk_chars,
            "text_column": self.text_column,
            "questions_per_chunk": self.questions_per_chunk,
            "paraphrases": self.paraphrases,
        }


class Synthesis:
    """One run over a source: chunks read and the output folder opened at once (bad input fails
    before any model loads), the teacher given to `run`."""

    def __init__(self, options: SynthesisOptions):
        self.options = options.check()
        self.chunks, self.report = read_chunks(
            options.source, chunk_chars=options.chunk_chars, text_column=options.text_column
        )
        self.folder = OutputFolder(options.out, options.identity())
        self.this_run: Counter = Counter()
        self.started = time.time()
        self.samples: list[dict[str, Any]] = self.folder.records(QA_FILE)[-SAMPLES:]
        self._done = sum(c.key in self.folder.done for c in self.chunks)

    @property
    def pending(self) -> list[Chunk]:
        return [c for c in self.chunks if c.key not in self.folder.done]

    @property
    def chunks_done(self) -> int:
        """Chunks of this source done (the progress file may also list chunks since removed from it)."""
        return self._done

    def run(self, teacher: Teacher, *, progress: bool = True) -> dict[str, Any]:
        """Work through the pending chunks; the summary is written after each, and at the end with
        the state ``done``, ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (the teacher)."""
        from tqdm import tqdm

        pending = self.pending
        bar = tqdm(
            total=len(self.chunks),
            initial=self.chunks_done,
            unit="chunk",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None if progress else True,
        )
        self._summary(teacher, "running")
        try:
            for chunk in pending:
                self._one(chunk, teacher)
                bar.update(1)
                bar.set_postfix(
                    qa=self.folder.counts["qa_written"], paraphrases=self.folder.counts["paraphrases_written"]
                )
                self._summary(teacher, "running")
        except ForgeError as exc:  # the teacher is gone, or refused a prompt (one longer than its context)
            message = (
                f"{exc} ({self.chunks_done} of {len(self.chunks)} chunks done and kept in "
                f"{self.options.out}; rerun the same command to resume)"
            )
            self._summary(teacher, "failed", message)
            raise (TeacherError if isinstance(exc, TeacherError) else UserError)(message) from None
        except KeyboardInterrupt:
            self._summary(teacher, "interrupted")
            raise
        finally:
            bar.close()
        return self._summary(teacher, "done")

    def _one(self, chunk: Chunk, teacher: Teacher) -> None:
        options, counts = self.options, Counter[str]()
        index = ChunkIndex(chunk.text)
        # The same chunk gets the same sampling in every run; 28 bits, so seed + call fits every engine's 32.
        seed = int(chunk.key[:7], 16)
        qa: list[dict[str, Any]] = []
        if options.questions_per_chunk:
            reply = self._ask(teacher, prompts.qa_messages(chunk.text, options.questions_per_chunk), seed, counts)
            pairs = prompts.parse_pairs(reply)
            if pairs is None:
                counts["not_json"] += 1
            for question, answer in (pairs or [])[: options.questions_per_chunk]:
                counts["qa_generated"] += 1
                if not index.answer_grounded(answer, options.min_grounding):
                    counts["qa_ungrounded"] += 1
                elif dedupe_key(question) in self.folder.seen_questions:
                    counts["qa_duplicates"] += 1
                else:
                    self.folder.seen_questions.add(dedupe_key(question))
                    qa.append(
                        {
                            "messages": [
                                {"role": "user", "content": question},
                                {"role": "assistant", "content": answer},
                            ],
                            "source": chunk.source(),
                        }
                    )
        paraphrases: list[dict[str, Any]] = []
        chunk_words = len(chunk.text.split())
        for number in range(options.paraphrases):
            reply = self._ask(teacher, prompts.paraphrase_messages(chunk.text, number), seed + 1 + number, counts)
            text = prompts.parse_paraphrase(reply)
            if text is None:
                counts["not_json"] += 1
                continue
            counts["paraphrases_generated"] += 1
            if len(text.split()) < PARAPHRASE_MIN_SHARE * chunk_words or not index.paraphrase_grounded(text):
                counts["paraphrases_ungrounded"] += 1
            elif dedupe_key(text) in self.folder.seen_paraphrases or dedupe_key(text) == dedupe_key(chunk.text):
                counts["paraphrases_duplicates"] += 1
            else:
                self.folder.seen_paraphrases.add(dedupe_key(text))
                paraphrases.append(
                    {
                        "text": text,
                        "style": prompts.PARAPHRASE_STYLES[number % len(prompts.PARAPHRASE_STYLES)],
                        "source": chunk.source(),
                    }
                )
        counts["qa_written"] += len(qa)
        counts["paraphrases_written"] += len(paraphrases)
        self.folder.commit(chunk.key, qa, paraphrases, counts)
        self._done += 1
        self.this_run.update({"chunks": 1, "teacher_calls": counts["teacher_calls"]})
        self.samples = (self.samples + qa)[-SAMPLES:]

    def _ask(self, teacher: Teacher, messages: list[dict[str, str]], seed: int, counts: Counter) -> str:
        counts["teacher_calls"] += 1
        return teacher.complete(messages, self.options.sampling, seed=seed)

    def _summary(self, teacher: Teacher, state: str, error: str | None = None) -> dict[str, Any]:
        counts = self.folder.counts
        summary = {
            "state": state,
            "error": error,
            "source": str(self.options.source),
            "out": str(self.options.out),
            "teacher": teacher.name,
            "chunks": len(self.chunks),
            "chunks_done": self.chunks_done,
            "documents": self.report.documents,
            "files": self.report.files,
            **{name: counts[name] for name in COUNTS},
            "this_run": {
                "chunks": self.this_run["chunks"],
                "teacher_calls": self.this_run["teacher_calls"],
                "seconds": round(time.time() - self.started, 1),
            },
            "outputs": {"qa": str(self.options.out / QA_FILE), "paraphrases": str(self.options.out / PARAPHRASE_FILE)},
            "settings": {
                **self.options.identity(),
                "min_grounding": self.options.min_grounding,
                **asdict(self.options.sampling),
            },
            "skipped_total": self.report.skipped_total,
            "skipped": self.report.skipped[:20],
            "samples": self.samples,
            "updated": time.time(),
        }
        self.folder.write_summary(summary)
        return summary


#: The counters of a synthesis, cumulative over its resumed runs (see docs/data.md).
COUNTS = (
    "teacher_calls",
    "not_json",
    "qa_generated",
    "qa_written",
    "qa_ungrounded",
    "qa_duplicates",
    "paraphrases_generated",
    "paraphrases_written",
    "paraphrases_ungrounded",
    "paraphrases_duplicates",
)
