"""Typed settings read from environment variables, with documented defaults.

Each settings class is a frozen dataclass whose fields are declared with :func:`env`;
:func:`load` reads and converts them and :func:`describe` lists them for the docs (a test
keeps the README's configuration tables in step with these declarations).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from herald_queue.errors import HeraldError

T = TypeVar("T")

_DURATION = "duration"
Duration = Annotated[float, _DURATION]
"""Seconds; the environment may say ``90``, ``90s``, ``15m``, ``24h``, ``30d`` or ``1h30m``."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


MAX_DURATION = 100 * 365.25 * 86400
"""The longest duration accepted anywhere (100 years): beyond it, times overflow."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError with the accepted forms."""
    raw = text.strip().lower()
    try:
        total = float(raw)
    except ValueError:
        position, total = 0, 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != position:
                break
            total += float(match[1]) * _UNIT_SECONDS[match[2]]
            position = match.end()
        if position != len(raw) or not raw:
            raise ValueError(
                f"{text!r} is not a duration (use seconds, or e.g. 90s, 15m, 24h, 30d)"
            ) from None
    if not 0 <= total <= MAX_DURATION:  # also false for NaN
        raise ValueError(f"{text!r} is not a duration from 0 to 100 years")
    return total


class ConfigError(HeraldError):
    pass


def env(name: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    """Declare a setting read from the environment variable ``name``."""
    return dataclasses.field(default=default, metadata={"env": name, "doc": doc, "secret": secret})


@dataclasses.dataclass(frozen=True)
class SettingInfo:
    env: str
    default: Any
    doc: str
    secret: bool
    type_name: str


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated and _DURATION not in annotation.__metadata__:
        return _convert(name, raw, typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw == "":
            return None
        return _convert(name, raw, args[0])
    if _DURATION in getattr(annotation, "__metadata__", ()):
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    try:
        if annotation is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
        if annotation is int:
            return int(raw)
        if annotation is float:
            return float(raw)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[annotation]
        raise ConfigError(f"{name}: expected {kind}, got {raw!r}") from None
    return raw


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from the environment; keyword ``overrides`` win over it."""
    source = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        name = field.metadata.get("env")
        if name and name in source:
            values[field.name] = _convert(name, source[name], hints[field.name])
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate()
    return instance


def describe(cls: type[Any]) -> list[SettingInfo]:
    hints = typing.get_type_hints(cls, include_extras=True)
    rows = []
    for field in dataclasses.fields(cls):
        if "env" not in field.metadata:
            continue
        annotation = hints[field.name]
        if _DURATION in getattr(annotation, "__metadata__", ()):
            type_name = "duration"
        else:
            type_name = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
        rows.append(
            SettingInfo(
                env=field.metadata["env"],
                default=field.default,
                doc=field.metadata["doc"],
                secret=field.metadata["secret"],
                type_name=type_name,
            )
        )
    return rows


def format_duration(seconds: float) -> str:
    """``90`` -> ``90s``, ``86400`` -> ``24h``, ``2592000`` -> ``30d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def require_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name}: must be greater than 0, got {value}")
