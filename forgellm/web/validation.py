"""Request parsing of the web app: the shared reader of `forgellm.security.requests` (JSON within
limits, one schema per endpoint, the path rule applied to every path and name field), plus
query strings. A refused value becomes a 400/403 whose JSON names the field."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel

from forgellm.security.requests import body, json_object, validate

__all__ = ["body", "json_body", "query", "validate"]

M = TypeVar("M", bound=BaseModel)


def json_body() -> dict[str, Any]:
    """The parsed JSON body as an object (an empty body counts as ``{}``)."""
    return json_object(request.get_data(), empty_ok=True)


def query(model: type[M]) -> M:
    return validate(model, request.args.to_dict())
