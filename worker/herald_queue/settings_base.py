"""The base of every settings class: pydantic-settings reading ``HERALD_*`` variables, the
field types with their bounds, and the translation of validation errors into one line per
bad variable. How to add a setting: see :mod:`herald_queue.settings`.

A field's variable is ``HERALD_`` + its name in capitals, unless the field gives another
with ``validation_alias`` (``HERALD_DATABASE_URL`` for ``DatabaseSettings.url``). The
field's type says what is accepted; :func:`accepted` and :func:`type_name` turn it into the
words of error lines and of the README's tables, so both always agree with the parser.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import annotated_types
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald_queue.durations import FORMS, parse_duration
from herald_queue.errors import SettingsError

PREFIX = "HERALD_"
_SHOWN_CHARS = 60


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a field holds, in words: ``name`` for the README's type column, ``accepted``
    for error lines (``HERALD_LEASE=x: must be <accepted>``)."""

    name: str
    accepted: str


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise PydanticCustomError("duration_parsing", "not a duration") from None
    return value


Duration = Annotated[
    float,
    Kind("duration", f"a duration from 0 to 100 years ({FORMS})"),
    BeforeValidator(_duration),
    Field(ge=0),
]
"""Seconds; the environment may say ``90``, ``90s``, ``15m``, ``24h``, ``30d`` or ``1h30m``."""

PositiveDuration = Annotated[
    float,
    Kind("duration", f"a duration greater than 0, at most 100 years ({FORMS})"),
    BeforeValidator(_duration),
    Field(gt=0),
]

Count = Annotated[int, Field(ge=1)]
"""How many of something: at least 1."""

Port = Annotated[int, Kind("port", "a port number from 1 to 65535"), Field(ge=1, le=65535)]
ListenPort = Annotated[
    int,
    Kind("port", "a port number from 1 to 65535, or 0 for any free port"),
    Field(ge=0, le=65535),
]
"""A port to listen on, where 0 lets the system choose (the process logs the one it got)."""

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
Namespace = Annotated[
    str,
    Kind(
        "namespace",
        "a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)",
    ),
    Field(pattern=rf"^{_LABEL}$"),
]
ObjectName = Annotated[
    str,
    Kind(
        "object name",
        "a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)",
    ),
    Field(pattern=rf"^{_LABEL}(\.{_LABEL})*$", max_length=253),
]


def _allows_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(annotation)


class HeraldSettings(BaseSettings):
    """Settings read from the environment when constructed (keyword arguments win over
    it). A bad value raises :class:`SettingsError`, one line per bad variable."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # a secret never reaches a message through pydantic
        extra="forbid",
    )
    section: ClassVar[str] = ""
    """The README heading of the class's table."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(error_lines(type(self), exc, values)) from None

    @classmethod
    def env_name(cls, field: str) -> str:
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else PREFIX + field.upper()

    @classmethod
    def secret(cls, field: str) -> bool:
        return _secret(cls.model_fields[field].annotation)

    # An optional setting given as empty (`HERALD_EGRESS_ALLOW=`, as the chart renders an
    # empty list) is unset.
    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if value == "" and field is not None and _allows_none(field.annotation):
            return None
        return value


def check(*classes: type[HeraldSettings]) -> None:
    """Read every class from the environment; one SettingsError with the lines of all."""
    lines: list[str] = []
    for cls in classes:
        try:
            cls()
        except SettingsError as exc:
            lines.extend(exc.lines)
    if lines:
        raise SettingsError(lines)


def _secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _base_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _base_type(args[0])
    return annotation


def _constraints(info: FieldInfo) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in info.metadata:
        for key in ("gt", "ge", "lt", "le"):
            value = getattr(item, key, None)
            if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                found[key] = value
    return found


def _kind(info: FieldInfo) -> Kind | None:
    kinds = [m for m in info.metadata if isinstance(m, Kind)]
    return kinds[-1] if kinds else None


def _int_bounds(info: FieldInfo) -> tuple[int | None, int | None]:
    bounds = _constraints(info)
    low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else None)
    high = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else None)
    return (None if low is None else int(low)), (None if high is None else int(high))


def accepted(info: FieldInfo) -> str:
    """What a field accepts, as ``must be ...`` continues: ``an integer of at least 1``."""
    kind = _kind(info)
    if kind is not None:
        return kind.accepted
    base = _base_type(info.annotation)
    if base is bool:
        return "true or false (also 1/0, yes/no, on/off)"
    if typing.get_origin(base) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(base))
    if base is int:
        low, high = _int_bounds(info)
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        if low is not None:
            return f"an integer of at least {low}"
        return "an integer"
    return "text"


def type_name(info: FieldInfo) -> str:
    """The README's type column: ``integer ≥ 1``, ``duration > 0``, ``boolean``..."""
    kind = _kind(info)
    base = _base_type(info.annotation)
    if kind is not None:
        bounds = _constraints(info)
        return kind.name + (" > 0" if bounds.get("gt") == 0 else "")
    if base is bool:
        return "boolean"
    if typing.get_origin(base) is typing.Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(base))
    if base is int:
        low, high = _int_bounds(info)
        if low is not None and high is not None:
            return f"integer {low}–{high}"
        return "integer" + (f" ≥ {low}" if low is not None else "")
    return "string"


def _shown(value: Any, secret: bool) -> str:
    if secret:
        return "(secret, not shown)"
    text = str(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        return repr(text)
    return text


def _field_of(cls: type[HeraldSettings], key: Any) -> str | None:
    for name, info in cls.model_fields.items():
        if key in (name, info.validation_alias):
            return name
    return None


def _given(cls: type[HeraldSettings], field: str, given: Mapping[str, Any], error: Any) -> Any:
    """The value as given (keyword argument or variable), before any normalisation."""
    for key in (field, cls.model_fields[field].validation_alias):
        if isinstance(key, str) and key in given:
            return given[key]
    return os.environ.get(cls.env_name(field), error)


def _line(cls: type[HeraldSettings], error: ErrorDetails, given: Mapping[str, Any]) -> str:
    cause = (error.get("ctx") or {}).get("error")
    problem = str(cause) if error["type"] == "value_error" and cause else error["msg"]
    field = _field_of(cls, error["loc"][0]) if error["loc"] else None
    if field is None:  # a rule about several settings: its message names them
        return problem
    info = cls.model_fields[field]
    if error["type"] != "value_error":
        problem = "must be " + accepted(info)
    value = _shown(_given(cls, field, given, error.get("input", "")), cls.secret(field))
    return f"{cls.env_name(field)}={value}: {problem}"


def error_lines(
    cls: type[HeraldSettings], exc: ValidationError, given: Mapping[str, Any]
) -> list[str]:
    """One line per bad variable; ``given`` are the keyword arguments of the constructor."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        line = _line(cls, error, given)
        if line not in lines:
            lines.append(line)
    return lines
