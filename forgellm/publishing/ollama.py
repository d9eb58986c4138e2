"""An Ollama ``Modelfile`` for a GGUF file: FROM the file, the chat template in Ollama's Go
template syntax, stop tokens and default sampling parameters.

Ollama cannot run Jinja, so each template family is translated by hand: ChatML (SmolLM2,
Qwen, and others using ``<|im_start|>``) and llama-3 (``<|start_header_id|>``). For any other
template the Modelfile has no TEMPLATE and Ollama falls back to the template inside the GGUF.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TemplateFamily:
    name: str
    marker: str  # a token that identifies the family in the Jinja template
    template: str  # Ollama's Go template
    stops: tuple[str, ...]
    system_pattern: str  # a default system prompt written literally in the Jinja template (newlines raw or \\n)


CHATML = TemplateFamily(
    "chatml",
    "<|im_start|>",
    """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
""",
    ("<|im_start|>", "<|im_end|>"),
    r"<\|im_start\|>system(?:\\n|\n)([^<{}'\"]+)<\|im_end\|>",
)
LLAMA3 = TemplateFamily(
    "llama3",
    "<|start_header_id|>",
    """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

""",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    r"<\|start_header_id\|>system<\|end_header_id\|>(?:\\n|\n){2}([^<{}'\"]+)<\|eot_id\|>",
)
FAMILIES = (CHATML, LLAMA3)
MAX_DEFAULT_CONTEXT = 8192  # num_ctx: the model's context, capped so Ollama's KV cache stays small


def chat_template(model_dir: Path) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    config = model_dir / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.exists() else None
    return template if isinstance(template, str) else None


def template_family(template: str | None) -> TemplateFamily | None:
    return next((f for f in FAMILIES if template and f.marker in template), None)


def modelfile(model_dir: Path, gguf_name: str) -> str:
    """The Modelfile text for ``gguf_name`` (beside it in the same folder) of the model in ``model_dir``."""
    template = chat_template(model_dir)
    family = template_family(template)
    config = json.loads((model_dir / "config.json").read_text())
    generation = model_dir / "generation_config.json"
    gen = json.loads(generation.read_text()) if generation.exists() else {}
    lines = ["# Ollama: ollama create NAME -f Modelfile && ollama run NAME", f"FROM ./{gguf_name}", ""]
    if family is not None:
        lines += [
            f"# chat template: {family.name}, translated from the model's Jinja template",
            f'TEMPLATE """{family.template}"""',
            "",
        ]
        system = re.search(family.system_pattern, template or "")
        if system:
            lines += [f'SYSTEM """{system.group(1).strip()}"""', ""]
        lines += [f'PARAMETER stop "{stop}"' for stop in family.stops]
    else:
        lines += ["# no TEMPLATE: this chat template has no Ollama translation here; Ollama uses the GGUF's own"]
    context = min(int(config.get("max_position_embeddings") or 2048), MAX_DEFAULT_CONTEXT)
    lines += [
        f"PARAMETER temperature {float(gen.get('temperature', 0.7)):g}",
        f"PARAMETER top_p {float(gen.get('top_p', 0.9)):g}",
        f"PARAMETER num_ctx {context}",
    ]
    return "\n".join(lines) + "\n"
