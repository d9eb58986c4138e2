"""Data pipeline benchmark: throughput, memory as the corpus grows, and the cached re-run.

A corpus is generated first: documents in the style of the sample dataset (`synthetic_corpus`),
in ``.jsonl`` shards and ``.txt`` files, with a few exact and near duplicates so every cleaning
stage does real work. Then:

- ``data_throughput``: MB/s of the whole path (read, normalise, filter, dedupe, near-dedupe,
  split, tokenise, pack, write the cache) on the largest corpus, beside the MB/s of the
  model's Hugging Face fast tokenizer alone on the same text (batch-encoding, nothing else)
  measured in the same run: what a plain script would spend on tokenising alone.
- ``data_peak_rss``: peak memory of a fresh process preparing the largest corpus, beside the
  peak for a corpus a quarter that size; flat memory means a ratio near 1.
- ``data_cached_rerun``: `prepare_dataset` on the sample dataset when its cache entry
  exists (hashing every input, loading the arrays), beside the first, uncached run.

Each measured run is a separate process, so one run's memory and caches do not colour the next.
Full run: a 100 MB corpus (and 25 MB). Quick run: 4 MB (and 1 MB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.data.sample.generator import synthetic_corpus
from forgellm.models.resolve import resolve
from forgellm.workspace import Workspace

SHARD_MB = 8  # size of each .jsonl shard
TXT_SHARE = 0.1  # share of documents written as .txt files
DUPLICATE_SHARE = 0.02  # documents written twice (exact duplicates)
NEAR_DUPLICATE_SHARE = 0.02  # documents written again with one word changed

# A fresh interpreter prepares a corpus and prints its own numbers as JSON.
_CHILD = r"""
import json, resource, sys, threading, time
from pathlib import Path
import psutil
from transformers import AutoTokenizer
from forgellm.data import DataSettings, prepare_dataset
corpus, workspace, model = map(Path, sys.argv[1:4])
tokenizer = AutoTokenizer.from_pretrained(str(model))
def cpu():  # this process and its worker processes (counted once they have exited)
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
workers_peak, done = [0], threading.Event()
def watch_workers():  # their summed RSS, sampled: getrusage's figure for children is the parent's at fork time
    while not done.wait(0.05):
        try:
            workers_peak[0] = max(workers_peak[0], sum(c.memory_info().rss for c in psutil.Process().children()))
        except psutil.Error:
            pass
threading.Thread(target=watch_workers, daemon=True).start()
start, cpu_start = time.perf_counter(), cpu()
data = prepare_dataset(DataSettings(input_dir=corpus, max_seq_length=1024, data_mixture_ratio=1.0), tokenizer, workspace)
seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
done.set()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_peak_rss_kb": workers_peak[0] // 1024,
                  "stats": {k: data.stats[k] for k in ("bytes_read", "documents", "duplicates_removed",
                                                       "near_duplicates_removed", "train_tokens", "val_tokens",
                                                       "sequences", "padding_fraction", "tokenizer")}}))
"""


def run(quick: bool) -> list[dict[str, Any]]:
    large_mb = 4 if quick else 100
    model = resolve("default", Workspace.current()).path  # only its tokenizer is used
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-data-") as tmp:
        root = Path(tmp)
        small = generate_corpus(root / "small", large_mb / 4, seed=1)
        large = generate_corpus(root / "large", large_mb, seed=2)
        # One workspace, as a user's: the small corpus's run makes the one-time check of the tokenizer
        # rebuild (kept per workspace), so the large run measures what every later dataset costs.
        small_run = _prepare_in_child(small, root / "ws", model)
        large_run = _prepare_in_child(large, root / "ws", model)
        tokenizer_s, tokenizer_cpu_s = _tokenizer_only(large, model)
        sample = Path(__file__).resolve().parents[2] / "dataset" / "sample" / "cpt"
        first = _prepare_in_child(sample, root / "ws-sample", model)
        cached = _prepare_in_child(sample, root / "ws-sample", model)

    corpus_mb = large_run["stats"]["bytes_read"] / 2**20
    mb_s, tokenizer_mb_s = corpus_mb / large_run["seconds"], corpus_mb / tokenizer_s
    mb_cpu_s, tokenizer_mb_cpu_s = corpus_mb / large_run["cpu_seconds"], corpus_mb / tokenizer_cpu_s
    peak_large, peak_small = _peak_mb(large_run), _peak_mb(small_run)
    s = large_run["stats"]
    return [
        {
            "name": "data_throughput",
            "value": round(mb_s, 2),
            "unit": "MB/s",
            "baseline": round(tokenizer_mb_s, 2),
            "ratio": round(mb_s / tokenizer_mb_s, 3),
            "notes": f"whole path on {corpus_mb:.0f} MB ({s['documents']} documents, {s['duplicates_removed']} exact "
            f"and {s['near_duplicates_removed']} near duplicates removed, {s['train_tokens'] + s['val_tokens']} "
            f"tokens) in {large_run['seconds']:.1f} s wall, encoder {s['tokenizer']['encoder']}, "
            f"{s['tokenizer']['worker_processes']} worker processes, the tokenizer rebuild's one-time check already "
            f"made in the workspace by the smaller corpus's run; baseline: the model's "
            f"Hugging Face fast tokenizer alone (batch-encoding, texts in memory) on the same text",
        },
        {
            "name": "data_cpu_throughput",
            "value": round(mb_cpu_s, 2),
            "unit": "MB per CPU-second",
            "baseline": round(tokenizer_mb_cpu_s, 2),
            "ratio": round(mb_cpu_s / tokenizer_mb_cpu_s, 3),
            "notes": f"the same run per CPU-second used ({large_run['cpu_seconds']:.1f} CPU-s, worker processes "
            f"included), which a busy machine does not skew; baseline: the tokenizer alone per CPU-second",
        },
        {
            "name": "data_peak_rss",
            "value": round(peak_large),
            "unit": "MB",
            "baseline": round(peak_small),
            "ratio": round(peak_large / peak_small, 3),
            "notes": f"peak RSS preparing {corpus_mb:.0f} MB: the process ({large_run['peak_rss_kb'] / 1024:.0f} MB) plus its "
            f"{s['tokenizer']['worker_processes']} worker processes ({large_run['workers_peak_rss_kb'] / 1024:.0f} MB "
            f"together); "
            f"baseline: the same for {small_run['stats']['bytes_read'] / 2**20:.0f} MB (a quarter); "
            f"ratio near 1 = flat memory",
        },
        {
            "name": "data_cached_rerun",
            "value": round(cached["seconds"], 3),
            "unit": "s",
            "baseline": round(first["seconds"], 3),
            "ratio": round(cached["seconds"] / first["seconds"], 4),
            "notes": "prepare_dataset on dataset/sample/cpt with its cache entry present (inputs re-hashed, arrays "
            "memory-mapped); baseline: the first, uncached run",
        },
    ]


def generate_corpus(folder: Path, megabytes: float, *, seed: int) -> Path:
    """Write about ``megabytes`` of documents in the style of the sample dataset (`synthetic_corpus`)
    under ``folder``: .jsonl shards and .txt files, with some exact and near duplicates."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    shard, shard_bytes, number = None, 0, 0
    try:
        for doc in synthetic_corpus(int(megabytes * 2**20), seed=seed):
            copies = [doc]
            roll = rng.random()
            if roll < DUPLICATE_SHARE:
                copies.append(doc)
            elif roll < DUPLICATE_SHARE + NEAR_DUPLICATE_SHARE:
                words = doc.split(" ")
                words[len(words) // 2] = "changed"
                copies.append(" ".join(words))
            for text in copies:
                number += 1
                if rng.random() < TXT_SHARE:
                    (folder / f"doc-{number:07d}.txt").write_text(text)
                    continue
                if shard is None or shard_bytes > SHARD_MB * 2**20:
                    if shard is not None:
                        shard.close()
                    shard, shard_bytes = open(folder / f"shard-{number:07d}.jsonl", "w"), 0
                line = json.dumps({"text": text}) + "\n"
                shard.write(line)
                shard_bytes += len(line)
    finally:
        if shard is not None:
            shard.close()
    return folder


def _peak_mb(run: dict[str, Any]) -> float:
    """Peak memory of a run: its process's, plus its worker processes' (summed, sampled)."""
    return (run["peak_rss_kb"] + run["workers_peak_rss_kb"]) / 1024


def _prepare_in_child(corpus: Path, workspace: Path, model: Path) -> dict[str, Any]:
    workspace.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(corpus), str(workspace), str(model)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"preparing {corpus} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tokenizer_only(corpus: Path, model: Path) -> tuple[float, float]:
    """Wall and CPU seconds of batch-encoding the corpus's texts with the fast tokenizer, nothing else
    (texts already in memory)."""
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(model)).backend_tokenizer
    texts = [json.loads(line)["text"] for path in sorted(corpus.glob("*.jsonl")) for line in path.open()]
    texts += [path.read_text() for path in sorted(corpus.glob("*.txt"))]
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), 512):
        backend.encode_batch_fast(texts[i : i + 512], add_special_tokens=True)
    return time.perf_counter() - start, time.process_time() - cpu_start
