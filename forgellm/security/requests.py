"""Reading a request, the same way in both apps: JSON within limits, schemas with the path rule.

* :func:`parse_json`: a body that is not JSON, nests deeper than :data:`MAX_JSON_DEPTH` or holds
  ``NaN``/``Infinity`` is a 400 naming the problem (never a RecursionError's 500). The size limit
  is the app's body limit (413), set by ``install_security``.
* :func:`validate`: a pydantic schema validated with the request's :class:`~forgellm.access.Roots`
  as context, so the path and name fields below apply the confinement rule where the request is
  parsed; the first problem becomes one UserError naming the field.
* :data:`ModelRef`, :data:`RunId`, :data:`PublishedName`: the request field types that carry
  the rule of :mod:`forgellm.access`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any, TypeVar

from flask import current_app, request
from pydantic import AfterValidator, BaseModel, ValidationError, ValidationInfo

from forgellm.access import Roots, check_name, request_model
from forgellm.errors import UserError
from forgellm.runs.layout import RUN_KINDS

ROOTS_EXTENSION = "forgellm.roots"
#: Deepest nesting of arrays and objects a request body may have (real bodies use 4 or 5).
MAX_JSON_DEPTH = 32
DELETABLE_KINDS = (*RUN_KINDS, "published")

M = TypeVar("M", bound=BaseModel)


def request_roots() -> Roots:
    """The roots the current app's requests may reach (set by ``install_security``)."""
    return current_app.extensions[ROOTS_EXTENSION]


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body; UserError (400) for invalid JSON or nesting beyond the limit."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise UserError(f"the request body is not valid JSON: {exc}") from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise _too_deep()
    return data


def json_object(raw: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}`` when ``empty_ok``)."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise UserError("the request body is empty: send a JSON object")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise UserError(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def validate(schema: type[M], data: Any) -> M:
    """``data`` validated against ``schema`` with this request's roots; UserError naming the field."""
    try:
        return schema.model_validate(data, context={ROOTS_EXTENSION: request_roots()})
    except ValidationError as exc:
        raise field_error(exc) from None


def body(schema: type[M], *, empty_ok: bool = False) -> M:
    """The request's JSON body, validated against ``schema``."""
    return validate(schema, json_object(request.get_data(), empty_ok=empty_ok))


def field_error(exc: ValidationError) -> UserError:
    """One message naming the first failing field, e.g. ``max_tokens: Input should be ...``."""
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    # Union members add their type name to the location (`stop.str`, `stop.list[...]`): keep the field path.
    field = ".".join(p for p in loc if not _is_union_tag(p)) or None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field; see /api/openapi.json for the fields this endpoint takes"
    elif first["type"] == "missing":
        message = "this field is required"
    got = first.get("input")
    detail = "" if first["type"] in ("missing", "extra_forbidden") or field is None else f" (got {_short(got)})"
    return UserError(f"{field}: {message}{detail}" if field else message, field=field)


# ---------------------------------------------------------------- field types with the path rule


def _roots(info: ValidationInfo) -> Roots:
    roots = (info.context or {}).get(ROOTS_EXTENSION)
    if roots is None:  # a request schema validated outside `validate`: fail closed
        raise RuntimeError("request schemas must be validated with forgellm.security.requests.validate")
    return roots


def _model_ref(value: str, info: ValidationInfo) -> str:
    return request_model(value, info.field_name or "model", _roots(info))


def _run_id(value: str, info: ValidationInfo) -> str:
    return check_name(value, info.field_name or "run", kinds=RUN_KINDS)


def _deletable(value: str, info: ValidationInfo) -> str:
    return check_name(value, info.field_name or "name", kinds=DELETABLE_KINDS)


#: A model, adapter or tokenizer: a name found in the workspace or the cache, or an allowed path.
ModelRef = Annotated[str, AfterValidator(_model_ref)]
#: A training run: ``cpt/<name>`` or ``ift/<name>``.
RunId = Annotated[str, AfterValidator(_run_id)]
#: What a request may delete: ``cpt/<run>``, ``ift/<run>`` or ``published/<model>``.
DeletableName = Annotated[str, AfterValidator(_deletable)]


# ---------------------------------------------------------------- helpers


def _too_deep() -> UserError:
    return UserError(
        f"the request body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels; send a flatter JSON object"
    )


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _is_union_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "none") or part.startswith(("list[", "function-", "constrained-"))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, BaseModel) else value.model_dump_json()
    return text if len(text) <= 80 else text[:77] + "..."
