"""Teachers: what writes the questions and paraphrases.

Either a model ForgeLLM loads itself (any name `forgellm models list` shows, loaded by an
engine and prompted with its own chat template) or any OpenAI-compatible server named by URL
(ForgeLLM's own server, llama.cpp, Ollama, vLLM), with an optional API key read from an
environment variable. Both answer one chat conversation with one text; the synthesis loop
does not know which it talks to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import httpx

from forgellm.engines.base import Message, SamplingParams
from forgellm.errors import UserError

if TYPE_CHECKING:
    from forgellm.engines.base import LoadedModel
    from forgellm.workspace import Workspace


class TeacherError(UserError):
    """The teacher cannot be reached or did not answer; the message names it and the fix."""

    status = 502
    kind = "teacher_error"


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 1024
    temperature: float = 0.7


class Teacher(Protocol):
    name: str  # how summaries and errors name it

    def complete(self, messages: list[Message], sampling: Sampling, *, seed: int) -> str:
        """The teacher's reply to a conversation. Raises `TeacherError` when it cannot answer."""
        ...

    def close(self) -> None: ...


def is_url(teacher: str) -> bool:
    return teacher.startswith(("http://", "https://"))


def open_teacher(
    teacher: str,
    *,
    workspace: Workspace,
    engine: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    timeout: float = 300.0,
) -> Teacher:
    """The teacher ``--teacher`` names: a URL is an OpenAI-compatible endpoint, anything else a model."""
    if is_url(teacher):
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise UserError(
                    f"--api-key-env names {api_key_env}, which is not set: export {api_key_env}=<key> first"
                )
        return EndpointTeacher(teacher, model=model, api_key=key, timeout=timeout)
    if api_key_env or model:
        flag = "--api-key-env" if api_key_env else "--teacher-model"
        raise UserError(
            f"{flag} applies to a teacher URL; {teacher!r} is a model name (give http://host:port/v1 to use a server)"
        )
    from forgellm.engines import load_model

    return ModelTeacher(load_model(teacher, engine=engine, workspace=workspace))


class ModelTeacher:
    """A model loaded in this process by one of the engines."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.name = loaded.info.name

    def complete(self, messages: list[Message], sampling: Sampling, *, seed: int) -> str:
        prompt = self.loaded.format_prompt(messages)
        params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature, seed=seed)
        return "".join(chunk.text for chunk in self.loaded.generate(prompt, params))

    def close(self) -> None:
        self.loaded.close()


class EndpointTeacher:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, url: str, *, model: str | None, api_key: str | None, timeout: float):
        self.base = chat_base_url(url)
        self.name = url
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self.model = model or self._first_model()

    def complete(self, messages: list[Message], sampling: Sampling, *, seed: int) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "seed": seed,
            "stream": False,
        }
        data = self._call("POST", "/chat/completions", json=body)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TeacherError(
                f"teacher {self.name} answered without choices[0].message.content: "
                f"is it an OpenAI-compatible chat endpoint?"
            ) from None
        return content if isinstance(content, str) else ""

    def _first_model(self) -> str:
        """The server's first model, when --teacher-model does not name one (ForgeLLM's server lists
        its loaded models first; llama.cpp serves one)."""
        data = self._call("GET", "/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not models or not isinstance(models[0], dict) or not isinstance(models[0].get("id"), str):
            raise TeacherError(
                f"teacher {self.name} lists no model at {self.base}/models: name one with --teacher-model"
            )
        return models[0]["id"]

    def _call(self, method: str, path: str, **kwargs: object) -> dict:
        url = self.base + path
        try:
            response = self._http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            raise TeacherError(
                f"teacher {self.name} did not answer within {self.timeout:g} s; is it overloaded? "
                f"Raise --timeout or use a smaller model"
            ) from None
        except httpx.HTTPError as exc:
            raise TeacherError(
                f"teacher {self.name} cannot be reached ({exc.__class__.__name__}: {exc}); "
                f"start the server or fix --teacher"
            ) from None
        if response.status_code in (401, 403):
            raise TeacherError(
                f"teacher {self.name} refused the request ({response.status_code}: "
                f"{_message(response)}); give its key with --api-key-env NAME"
            )
        if response.status_code >= 400:
            raise TeacherError(
                f"teacher {self.name} answered {response.status_code} to {method} {url}: {_message(response)}"
            )
        try:
            return response.json()
        except ValueError:
            raise TeacherError(
                f"teacher {self.name} answered {method} {url} with something other than JSON; "
                f"is it an OpenAI-compatible server?"
            ) from None

    def close(self) -> None:
        self._http.close()


def chat_base_url(url: str) -> str:
    """The ``.../v1`` base of an OpenAI-compatible server from what a user types: the server's
    address (``http://127.0.0.1:8080``), its ``/v1`` or the full ``/v1/chat/completions``."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise UserError(f"teacher URL {url!r} has no host; give e.g. http://127.0.0.1:5001/v1")
    base = url.rstrip("/").removesuffix("/chat/completions")
    return base if base.endswith("/v1") else base + "/v1"


def _message(response: httpx.Response) -> str:
    """The error text of a response: OpenAI's ``error.message``, else the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"]).splitlines()[0]
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text.strip().splitlines()[0][:200] if response.text.strip() else "(empty body)"
