"""Request parsing with pydantic: one schema per endpoint, shared by the handlers and the
OpenAPI document. A refused value becomes a 400 whose JSON names the field."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from forgellm.errors import UserError

M = TypeVar("M", bound=BaseModel)


class FieldError(UserError):
    """A refused request value; ``field`` is its dotted name (shown beside the form field)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def from_validation_error(exc: ValidationError, prefix: str = "") -> FieldError:
    """The first problem of a pydantic error, worded for a person, with the field named."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    if prefix and field:
        field = f"{prefix}.{field}"
    name = field.split(".")[-1] if field else "body"
    hint = ""
    if first["type"] == "extra_forbidden":
        hint = " (unknown key)"
    return FieldError(f"{name}: {first['msg']}{hint}", field)


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix) from None


def json_body() -> Any:
    """The parsed JSON body (an empty body counts as ``{}``)."""
    if not request.data:
        return {}
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise FieldError("the request body is not valid JSON; send a JSON object")
    return data


def body(model: type[M]) -> M:
    """The JSON body validated against ``model``."""
    return validate(model, json_body())


def query(model: type[M]) -> M:
    return validate(model, request.args.to_dict())
