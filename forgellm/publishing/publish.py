"""Publish a run: fused weights, tokenizer, model card, dashboard and (optionally) a GGUF file
in ``models/published/NAME``, written under a temporary name and renamed when complete."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.analysis.analyze import Analysis, analyze
from forgellm.analysis.runs import load_run
from forgellm.errors import UserError
from forgellm.jsonio import read_json
from forgellm.models.resolve import MODEL_MARKER, ModelInfo
from forgellm.publishing.fuse import base_model_of, fuse_into
from forgellm.publishing.staging import refuse_existing, staged_folder
from forgellm.runs.checkpoints import choose_checkpoint, read_best
from forgellm.runs.layout import FINAL_DIR, find_run, read_config
from forgellm.runs.lock import refuse_if_held
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class PublishResult:
    out: Path
    checkpoint: Path
    method: str
    gguf: dict[str, Any] | None  # file name and verification numbers


def publish_run(
    run: str | Path,
    *,
    checkpoint: str = "best",
    name: str | None = None,
    gguf: bool = False,
    gguf_type: str = "f16",
    workspace: Workspace | None = None,
) -> PublishResult:
    workspace = workspace or Workspace.current()
    run_dir = find_run(run, workspace)
    ckpt = choose_checkpoint(run_dir, checkpoint)
    if ckpt.name == FINAL_DIR:  # the trainer replaces final/ at its end
        refuse_if_held(run_dir, "publish the final weights of")
    name = name or f"{run_dir.name}-{ckpt.name}"
    if not NAME.match(name):
        raise UserError(
            f"--name {name!r} is not a usable folder name: use letters, digits, '.', '_' or '-' "
            f"(128 at most), starting with a letter or digit"
        )
    out = workspace.models("published") / name
    refuse_existing(out)
    base = base_model_of(run_dir, ckpt, workspace)
    if gguf:
        from forgellm.publishing.gguf_export import TYPES, arch_spec

        if gguf_type not in TYPES:
            raise UserError(f"--gguf-type {gguf_type!r} is not one of {', '.join(TYPES)}")
        arch_spec(read_json(base.path / "config.json") or {})  # an unmapped architecture: refused before fusing
    metrics = load_run(run_dir)
    analysis = analyze(metrics)
    with staged_folder(out) as staging:
        method = fuse_into(ckpt, base, staging, dequantize=gguf)  # GGUF export reads float weights
        _dashboard(run_dir, staging / "dashboard.png")
        gguf_info = None
        if gguf:
            from forgellm.publishing.gguf_export import export_into

            gguf_info = export_into(staging, staging, name=name, dtype=gguf_type)
        card = ModelCard(
            name=name, run_dir=run_dir, checkpoint=ckpt, base=base, method=method, analysis=analysis, gguf=gguf_info
        )
        (staging / "README.md").write_text(card.render(), encoding="utf-8")
        (staging / MODEL_MARKER).write_text(
            json.dumps(
                {
                    "source_run": str(run_dir),
                    "checkpoint": ckpt.name,
                    "base_model": base.name,
                    "method": method,
                    "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "gguf": gguf_info["file"] if gguf_info else None,
                    "modelfile": gguf_info["modelfile"] if gguf_info else None,
                },
                indent=2,
            )
            + "\n"
        )
    return PublishResult(out=out, checkpoint=ckpt, method=method, gguf=gguf_info)


def _dashboard(run_dir: Path, out: Path) -> None:
    from forgellm.analysis.dashboard_png import render_png
    from forgellm.analysis.series import dashboard_data

    render_png(dashboard_data([run_dir]), out)


@dataclass
class ModelCard:
    name: str
    run_dir: Path
    checkpoint: Path
    base: ModelInfo
    method: str
    analysis: Analysis
    gguf: dict[str, Any] | None

    def render(self) -> str:
        config = read_config(self.run_dir)
        sections = [
            self._front_matter(config),
            f"# {self.name}\n\n{self._summary(config)}",
            "## Training data\n\n"
            + _table(
                _flatten(read_json(self.run_dir / "data_stats.json") or {}),
                empty="No data_stats.json was recorded for this run.",
            ),
            "## Training configuration\n\n" + _table(config, empty="No config.yaml was recorded for this run."),
            "## Metrics\n\n" + _table(self._metrics()),
            "## Evaluation\n\n" + self._evaluation(),
            "## Training curves\n\n![Training dashboard](dashboard.png)\n\n" + self._recommendations(),
            "## How to use\n\n" + self._usage(),
            "## Limitations\n\n" + self._limitations(config),
        ]
        return "\n\n".join(sections) + "\n"

    def _front_matter(self, config: dict[str, Any]) -> str:
        tags = ["forgellm", config.get("training_type", "cpt"), config.get("fine_tune_type", "lora")]
        return (
            "---\n"
            + f"base_model: {self.base.name}\nlibrary_name: transformers\ntags:\n"
            + "".join(f"- {t}\n" for t in tags)
            + "---"
        )

    def _summary(self, config: dict[str, Any]) -> str:
        kind = {"cpt": "continued pre-training", "ift": "instruction fine-tuning"}.get(
            config.get("training_type", ""), "training"
        )
        why = self._why()
        return (
            f"Fine-tuned from **{self.base.name}** by {kind} with ForgeLLM "
            f"({config.get('fine_tune_type', '?')}, {config.get('engine', '?')} engine). "
            f"Weights of checkpoint `{self.checkpoint.name}` of run `{self.run_dir.name}`, {why}, "
            f"fused into the base model ({self.method})."
        )

    def _why(self) -> str:
        """Why this checkpoint: the trainer's best (by the run's best_metric), the analysis' recommendation,
        the final weights, or the user's choice."""
        a = self.analysis
        best = read_best(self.run_dir)
        if best and best.get("checkpoint") == self.checkpoint.name:
            metric = best.get("metric") or "val_loss"
            value = best.get("value", best.get(metric))
            return f"the best checkpoint by {metric}" + (f" ({value:.4f})" if isinstance(value, (int, float)) else "")
        if a.recommended and a.recommended.name == self.checkpoint.name:
            return (
                f"recommended by ForgeLLM's checkpoint score ({a.recommended.score:.4f}; validation loss, "
                f"generalisation gap, stability and convergence)"
            )
        return "the final weights" if self.checkpoint.name == FINAL_DIR else "chosen by hand"

    def _metrics(self) -> dict[str, Any]:
        a = self.analysis
        chosen = next((c for c in a.checkpoints if c.name == self.checkpoint.name), None)
        rows = {
            "steps trained": f"{a.steps_done}" + (f" of {a.total_steps}" if a.total_steps else ""),
            "final training loss": a.final_loss,
            "best validation loss": a.best_val_loss,
            "step of best validation loss": a.best_val_step,
            "published checkpoint": self.checkpoint.name,
            "its validation loss": chosen.val_loss if chosen else None,
            "its checkpoint score": chosen.score if chosen else None,
            "overfitting onset": a.overfitting_onset,
            "loss stability": a.stability + (f" ({a.noise:.1%} variation)" if a.noise is not None else ""),
            "mean tokens/s": a.throughput.get("mean"),
        }
        return rows

    def _evaluation(self) -> str:
        files = sorted({*self.run_dir.glob("eval*.json"), *self.run_dir.glob("evaluation/*.json")})
        if not files:
            return (
                "No evaluation results were recorded. Run `forgellm eval` on the run (it records them in "
                "the run folder) before publishing to have them here."
            )
        return "\n\n".join(f"### {f.name}\n\n" + _table(_flatten(read_json(f) or {})) for f in files)

    def _recommendations(self) -> str:
        recs = self.analysis.recommendations
        if not recs:
            return "The analysis found nothing to flag in the curves."
        return "What the curves say:\n\n" + "\n".join(f"- {r.message}" for r in recs)

    def _usage(self) -> str:
        lines = [
            "```bash",
            f'forgellm cli generate --model published/{self.name} --prompt "Hello"',
            "```",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("models/published/{self.name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("models/published/{self.name}")',
            "",
            "from mlx_lm import load",
            f'model, tokenizer = load("models/published/{self.name}")',
            "```",
        ]
        if self.gguf:
            lines += [
                "",
                f"`{self.gguf['file']}` holds the same weights in GGUF ({self.gguf['type'].upper()}) for "
                f"llama.cpp, Ollama and other GGUF readers; read back with transformers it gives the same "
                f"logits (max difference {self.gguf['max_abs_diff']:.2g}).",
                "",
                "Run it in Ollama (the `Modelfile` here holds the chat template, stop tokens and "
                "default parameters) or in llama.cpp:",
                "",
                "```bash",
                f"ollama create {self.name.lower()} -f Modelfile && ollama run {self.name.lower()}",
                f"llama-cli -m {self.gguf['file']} -cnv",
                "```",
            ]
        return "\n".join(lines)

    def _limitations(self, config: dict[str, Any]) -> str:
        items = [
            f"It inherits the knowledge, biases and licence of its base model {self.base.name}.",
            f"It was trained for {self.analysis.steps_done} steps on the data summarised above; outside that domain "
            f"expect the base model's behaviour or worse (forgetting).",
            "Validation loss measures fit to held-out text of the same data, not factual accuracy or safety; "
            "check answers before relying on them.",
        ]
        if self.gguf:
            items.append(
                "The GGUF file names its pre-tokenizer `default`; llama.cpp may split rare inputs "
                "(long digit runs) differently from the original tokenizer."
            )
        items += [f"Analysis: {r.message}" for r in self.analysis.recommendations if r.severity == "warning"]
        return "\n".join(f"- {i}" for i in items)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested dict as ``a.b`` keys; lists are counted, not listed."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, list):
            if value and all(not isinstance(v, (dict, list)) for v in value) and len(value) <= 10:
                flat[name] = ", ".join(map(str, value))
            else:
                flat[name + " (count)"] = len(value)
        else:
            flat[name] = value
    return flat


def _table(rows: dict[str, Any], empty: str = "Nothing recorded.") -> str:
    if not rows:
        return empty

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (list, dict)):
            return json.dumps(v)
        return str(v).replace("|", "\\|").replace("\n", " ")

    return "| key | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {cell(v)} |" for k, v in rows.items())
