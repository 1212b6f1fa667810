"""The base of every settings class: pydantic-settings reading ``HERALD_*`` variables, the
field types with their bounds, and the translation of validation errors into one line per
bad variable. How to add a setting: see :mod:`herald_queue.settings`.

A field's variable is ``HERALD_`` + its name in capitals, unless the field gives another
with ``validation_alias`` (``HERALD_DATABASE_URL`` for ``DatabaseSettings.url``). The
field's type says what is accepted; :func:`describe` turns it into the words of error lines
and of the configuration tables (docs/configuration.md), so both always agree with the parser.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal, Self

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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from herald_core.durations import FORMS, parse_duration
from herald_core.errors import SettingsError

PREFIX = "HERALD_"
_SHOWN_CHARS = 60


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a field holds, in words: ``name`` for the tables' type column, ``accepted``
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
    Kind("duration > 0", f"a duration greater than 0, at most 100 years ({FORMS})"),
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


_FROM_ENV: ContextVar[bool] = ContextVar("herald_settings_from_env", default=False)


class HeraldSettings(BaseSettings):
    """Settings of a process: :meth:`from_env` reads them from the environment (what the
    commands do); constructed directly (tests, `herald demo`, the benchmarks), they are the
    defaults and the keyword arguments only, whatever the environment says. A bad value
    raises :class:`SettingsError`, one line per bad variable."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # a secret never reaches a message through pydantic
        extra="forbid",
    )
    section: ClassVar[str] = ""
    """The heading of the class's table in docs/configuration.md."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(error_lines(type(self), exc, values)) from None

    @classmethod
    def from_env(cls, **values: Any) -> Self:
        """The settings the environment gives (keyword arguments win over it)."""
        token = _FROM_ENV.set(True)
        try:
            return cls(**values)
        finally:
            _FROM_ENV.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings) if _FROM_ENV.get() else (init_settings,)

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
            cls.from_env()
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


def describe(info: FieldInfo) -> Kind:
    """What a field accepts: its Kind, or one derived from its type and lower bound."""
    kinds = [m for m in info.metadata if isinstance(m, Kind)]
    if kinds:
        return kinds[-1]
    base = _base_type(info.annotation)
    if base is bool:
        return Kind("boolean", "true or false (also 1/0, yes/no, on/off)")
    if typing.get_origin(base) is typing.Literal:
        choices = [str(a) for a in typing.get_args(base)]
        return Kind(" / ".join(f"`{c}`" for c in choices), "one of " + ", ".join(choices))
    if base is int:
        low, high = _int_bounds(info.metadata)
        if low is not None and high is not None:
            return Kind(f"integer {low}–{high}", f"an integer from {low} to {high}")
        if low is not None:
            return Kind(f"integer ≥ {low}", f"an integer of at least {low}")
        if high is not None:
            return Kind(f"integer ≤ {high}", f"an integer of at most {high}")
        return Kind("integer", "an integer")
    return Kind("string", "text")


def _int_bounds(metadata: list[Any]) -> tuple[int | None, int | None]:
    """The least and greatest integer ``Field(ge=, gt=, le=, lt=)`` allow."""
    low = high = None
    for m in metadata:
        if not isinstance(m, annotated_types.BaseMetadata):
            continue
        ge, gt, le, lt = (getattr(m, name, None) for name in ("ge", "gt", "le", "lt"))
        if ge is not None:
            low = int(ge)
        elif gt is not None:
            low = int(gt) + 1
        if le is not None:
            high = int(le)
        elif lt is not None:
            high = int(lt) - 1
    return low, high


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
    return os.environ.get(cls.env_name(field), error) if _FROM_ENV.get() else error


def _line(cls: type[HeraldSettings], error: ErrorDetails, given: Mapping[str, Any]) -> str:
    cause = (error.get("ctx") or {}).get("error")
    problem = str(cause) if error["type"] == "value_error" and cause else error["msg"]
    field = _field_of(cls, error["loc"][0]) if error["loc"] else None
    if field is None:  # a rule about several settings: its message names them
        return problem
    info = cls.model_fields[field]
    if error["type"] != "value_error":
        problem = "must be " + describe(info).accepted
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


LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


BeforeLower = BeforeValidator(_lower)


class LogSettings(HeraldSettings):
    section: ClassVar[str] = "Logging (every process)"

    log_level: Annotated[LogLevel | None, BeforeLower] = Field(
        None,
        description="Least level logged (any case). Default: info for `herald worker` and "
        "`herald operator`, warning for commands; `--log-level` wins over it.",
    )
    log_format: Annotated[Literal["json", "text"] | None, BeforeLower] = Field(
        None,
        description="json (one object a line, for log collectors) or text. Default: json for "
        "`herald worker` and `herald operator`, text for commands.",
    )
