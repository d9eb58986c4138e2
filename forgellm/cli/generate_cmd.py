"""``forgellm cli generate``: one completion streamed to the terminal, or a chat.

With ``--prompt`` (or a prompt piped on stdin) the completion streams to stdout and a one-line
summary goes to stderr, so ``> file`` captures only the text. Without a prompt on a terminal
it opens a chat; `ChatSession` holds the conversation and its slash commands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from forgellm.engines.base import GenerationChunk, LoadedModel, Message, PromptFormat, SamplingParams
from forgellm.errors import UserError

DEFAULTS = SamplingParams()


@click.group("cli")
def cli_group() -> None:
    """Use a model from the terminal.

    \b
    Examples:
      forgellm cli generate --model default --prompt "What is the capital of France?"
      forgellm cli generate --model default            # chat in the terminal
    """


@cli_group.command("generate")
@click.option(
    "--model",
    "-m",
    default="default",
    show_default=True,
    help="Model: a path, a name under models/, an alias, or a cached hub id.",
)
@click.option("--adapter", "-a", default=None, help="Adapter folder, training run or checkpoint to apply.")
@click.option("--engine", "-e", default=None, help="auto, mlx or torch  [default: $FORGELLM_ENGINE or auto]")
@click.option("--prompt", "-p", default=None, help="Text to answer; without it: chat on a terminal, stdin otherwise.")
@click.option("--system", "-s", default=None, help="System prompt (instruct models).")
@click.option(
    "--max-tokens", "-n", type=int, default=DEFAULTS.max_tokens, show_default=True, help="Most tokens to generate."
)
@click.option(
    "--temperature",
    "-t",
    type=float,
    default=DEFAULTS.temperature,
    show_default=True,
    help="Sampling temperature; 0 is greedy (deterministic).",
)
@click.option("--top-p", type=float, default=DEFAULTS.top_p, show_default=True, help="Nucleus sampling; 1 disables it.")
@click.option("--top-k", type=int, default=DEFAULTS.top_k, show_default=True, help="Top-k sampling; 0 disables it.")
@click.option(
    "--repetition-penalty",
    type=float,
    default=DEFAULTS.repetition_penalty,
    show_default=True,
    help="Penalty for tokens already in the text; 1 disables it.",
)
@click.option("--seed", type=int, default=None, help="Random seed, for reproducible sampling.")
@click.option("--stop", multiple=True, help="Stop when this text appears (repeatable); it is not printed.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["chat", "raw"]),
    default=None,
    help="chat: the model's chat template; raw: plain continuation  [default: chat for instruct models]",
)
def generate(
    model: str,
    adapter: str | None,
    engine: str | None,
    prompt: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    seed: int | None,
    stop: tuple[str, ...],
    fmt: PromptFormat | None,
) -> None:
    """Generate text with a model (and adapter), streamed as it comes.

    \b
    Examples:
      forgellm cli generate --model default --prompt "What is the capital of France?"
      forgellm cli generate -m default -p "Write a haiku" --temperature 0.9 --seed 1
      forgellm cli generate -m default --adapter models/ift/my-run --engine torch
      forgellm cli generate -m default --format raw -p "Once upon a time" --stop "."
      echo "Summarise: ..." | forgellm cli generate -m default
      forgellm cli generate -m default                 # chat; type /help inside
    """
    from forgellm.engines import load_model, resolve_engine_name

    engine_name = resolve_engine_name(engine)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=list(stop),
    ).validate()
    # sys.stdin, which click's test runner replaces too (click.get_text_stream is deprecated in click 8.2+)
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None and not prompt.strip():
        raise UserError("the prompt is empty: pass --prompt TEXT, pipe text on stdin, or run on a terminal to chat")
    loaded = load_model(model, adapter, engine_name)
    try:
        if prompt is None:  # a terminal and no --prompt: chat
            ChatSession(loaded, params, system=system, fmt=fmt).run(line_reader())
        else:
            stream_reply(loaded, loaded.format_prompt(prompt, system=system, fmt=fmt), params)
    finally:
        loaded.close()


def stream_reply(loaded: LoadedModel, text: str, params: SamplingParams) -> tuple[str, GenerationChunk | None]:
    """Print the completion as it streams, then the summary line on stderr; return the text.

    Ctrl-C stops the generation (the engine loop is closed) and keeps what was printed.
    """
    pieces: list[str] = []
    last: GenerationChunk | None = None
    with contextlib.closing(loaded.generate(text, params)) as chunks:
        try:
            for last in chunks:
                if last.text:
                    pieces.append(last.text)
                    click.echo(last.text, nl=False)
        except KeyboardInterrupt:
            click.echo()
            click.echo("[interrupted]", err=True)
            return "".join(pieces), last
    click.echo()
    if last is not None:
        click.echo(click.style(summary_line(last), dim=True), err=True)
    return "".join(pieces), last


def summary_line(chunk: GenerationChunk) -> str:
    first = f"{chunk.time_to_first_token:.2f} s" if chunk.time_to_first_token is not None else "-"
    return (
        f"{chunk.completion_tokens} tokens, {chunk.tokens_per_second:.1f} tok/s, first token after {first} "
        f"(prompt {chunk.prompt_tokens} tokens, finish: {chunk.finish_reason})"
    )


def line_reader() -> Callable[[str], str]:
    """``prompt_toolkit`` when it is installed, else ``input`` with readline editing and history."""
    try:
        from prompt_toolkit import PromptSession
    except ImportError:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it gives input() line editing and history)
        return input
    return PromptSession().prompt


# --- chat ---------------------------------------------------------------------------------------

_INT_PARAMS = {"max_tokens", "top_k"}
_FLOAT_PARAMS = {"temperature", "top_p", "repetition_penalty"}


def parse_param(name: str, value: str) -> object:
    """A ``/params`` value as the type its field needs (``stop`` is comma-separated, ``none`` clears)."""
    if name not in {f.name for f in dataclasses.fields(SamplingParams)}:
        names = ", ".join(f.name for f in dataclasses.fields(SamplingParams))
        raise UserError(f"unknown parameter {name!r}: use one of {names}")
    cleared = value.strip().lower() in ("", "none", "null")
    try:
        if name == "stop":
            return [] if cleared else [s for s in value.split(",") if s]
        if name == "seed":
            return None if cleared else int(value)
        if name in _INT_PARAMS:
            return int(value)
        return float(value)
    except ValueError:
        raise UserError(f"{name}={value!r} is not a number: e.g. /params {name}=1") from None


class ChatSession:
    """A conversation with a loaded model, driven by lines of input (text or /commands)."""

    def __init__(
        self, loaded: LoadedModel, params: SamplingParams, *, system: str | None = None, fmt: PromptFormat | None = None
    ):
        self.loaded = loaded
        self.params = params
        self.system = system
        self.fmt = fmt
        self.messages: list[Message] = []
        self.commands: dict[str, tuple[Callable[[str], bool], str]] = {
            "/system": (self._system, "/system [TEXT]   show or set the system prompt ('/system -' removes it)"),
            "/clear": (self._clear, "/clear           forget the conversation"),
            "/save": (self._save, "/save FILE       write the conversation to a JSON file"),
            "/load": (self._load, "/load FILE       continue a conversation saved with /save"),
            "/params": (self._params, "/params [K=V..]  show or set sampling parameters, e.g. /params temperature=0.2"),
            "/help": (self._help, "/help            this list"),
            "/quit": (self._quit, "/quit            leave (also /exit or Ctrl-D)"),
            "/exit": (self._quit, ""),
        }

    def run(self, read_line: Callable[[str], str]) -> None:
        adapter = f" + {self.loaded.adapter.name}" if self.loaded.adapter else ""
        click.echo(
            f"Chatting with {self.loaded.info.name}{adapter} on {self.loaded.engine}. "
            f"/help for commands, /quit to leave.",
            err=True,
        )
        while True:
            try:
                line = read_line("you> ")
            except EOFError:
                click.echo(err=True)
                return
            except KeyboardInterrupt:
                click.echo("\n(/quit to leave)", err=True)
                continue
            if not self.handle(line):
                return

    def handle(self, line: str) -> bool:
        """Act on one line; False when the session should end."""
        line = line.strip()
        if not line:
            return True
        try:
            if line.startswith("/"):
                name, _, arg = line.partition(" ")
                if name not in self.commands:
                    raise UserError(f"unknown command {name}: /help lists them")
                return self.commands[name][0](arg.strip())
            self.ask(line)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
        return True

    def ask(self, text: str) -> str:
        """Send one user turn; the streamed answer joins the conversation."""
        self.messages.append({"role": "user", "content": text})
        try:
            prompt = self.loaded.format_prompt(self.messages, system=self.system, fmt=self.fmt)
            reply, _ = stream_reply(self.loaded, prompt, self.params)
        except UserError:
            self.messages.pop()
            raise
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    def _system(self, arg: str) -> bool:
        if arg:
            self.system = None if arg == "-" else arg
        click.echo(f"system: {self.system}" if self.system else "system: (the model's default)", err=True)
        return True

    def _clear(self, _: str) -> bool:
        self.messages.clear()
        click.echo("conversation cleared", err=True)
        return True

    def _save(self, arg: str) -> bool:
        path = _file_argument(arg, "/save")
        data = {
            "model": self.loaded.info.name,
            "adapter": str(self.loaded.adapter) if self.loaded.adapter else None,
            "engine": self.loaded.engine,
            "system": self.system,
            "params": self.params.to_dict(),
            "messages": self.messages,
        }
        try:
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror}") from exc
        click.echo(f"saved {len(self.messages)} messages to {path}", err=True)
        return True

    def _load(self, arg: str) -> bool:
        from forgellm.engines.prompting import to_messages

        path = _file_argument(arg, "/load")
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise UserError(f"{path} is not JSON: {exc}") from exc
        raw = data.get("messages") if isinstance(data, dict) else data
        if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
            raise UserError(f"{path} holds no conversation: expected a list of messages or a /save file")
        self.messages = [m for m in to_messages(raw) if m["role"] != "system"]
        system = next((m["content"] for m in raw if m.get("role") == "system"), None)
        self.system = data.get("system", system) if isinstance(data, dict) else system
        click.echo(f"loaded {len(self.messages)} messages from {path}", err=True)
        return True

    def _params(self, arg: str) -> bool:
        if arg:
            changes: dict[str, Any] = {}
            for item in arg.split():
                name, sep, value = item.partition("=")
                if not sep:
                    raise UserError(f"expected NAME=VALUE, got {item!r}: e.g. /params temperature=0.2")
                changes[name] = parse_param(name, value)
            self.params = dataclasses.replace(self.params, **changes).validate()
        click.echo(
            " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in self.params.to_dict().items()),
            err=True,
        )
        return True

    def _help(self, _: str) -> bool:
        click.echo("\n".join(text for _, text in self.commands.values() if text), err=True)
        click.echo("Anything else is sent to the model. Ctrl-C stops an answer.", err=True)
        return True

    def _quit(self, _: str) -> bool:
        return False


def _file_argument(arg: str, command: str) -> Path:
    if not arg:
        raise UserError(f"{command} needs a file name, e.g. {command} chat.json")
    return Path(arg).expanduser()
