"""The ``forgellm data`` options, derived from `DataSettings`' fields (so from `TrainingConfig`'s
for the keys a training config has too): type, default, bounds' help text and choices come from
the field; only the option's name is chosen here. `to_args` writes settings back as options, for
callers that run the command (the web app's data stats).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic.fields import FieldInfo

from forgellm.data.settings import DataSettings

F = TypeVar("F", bound=Callable[..., Any])

#: Option names that differ from ``--<field-name>`` (short forms users already type).
NAMES = {
    "training_type": "mode",
    "ift_format": "format",
    "data_mixture_ratio": "mixture-ratio",
    "general_data_dir": "general-data",
    "quality_filters": "filters",
}
#: Fields with no option: the PATH argument, and the replay set's model (``--model``) and knobs.
NOT_OPTIONS = {"input_dir", "replay_model", "replay_engine", "replay_samples", "replay_max_tokens"}


def option_fields() -> dict[str, FieldInfo]:
    """The fields that are options, in declaration order."""
    return {name: f for name, f in DataSettings.model_fields.items() if name not in NOT_OPTIONS}


def option_name(field: str) -> str:
    return "--" + NAMES.get(field, field.replace("_", "-"))


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in args])
    if args:  # X | None
        return _click_type(args[0])
    if annotation is Path:
        return click.Path(path_type=Path)
    return annotation


def _option(name: str, field: FieldInfo) -> Callable[[F], F]:
    flag = option_name(name)
    if field.annotation is bool:
        return click.option(
            f"{flag}/--no-{flag[2:]}", name, default=field.default, show_default=True, help=field.description
        )
    return click.option(
        flag,
        name,
        type=_click_type(field.annotation),
        default=field.default,
        show_default=field.default is not None,
        help=field.description,
    )


def data_options(fn: F) -> F:
    """Every data setting as an option (see `option_fields`)."""
    for name, field in reversed(option_fields().items()):
        fn = _option(name, field)(fn)
    return fn


def to_args(values: dict[str, Any]) -> list[str]:
    """``{field: value}`` as ``forgellm data`` options; None (the default) gives no option."""
    fields = option_fields()
    args: list[str] = []
    for name, value in values.items():
        if name not in fields:
            raise KeyError(f"{name!r} is not a data option")
        if value is None:
            continue
        flag = option_name(name)
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        else:
            args += [flag, str(value)]
    return args
