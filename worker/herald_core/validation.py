"""Pydantic validation, answered the way Herald answers bad input: every problem with its
field path (``[2].priority``, ``alerts[0].labels``) and what to do, as one
:class:`~herald_core.errors.InvalidRequest`.

The models (``requests.py``, ``herald_worker.api.models``) state each rule once; this module
only words pydantic's error types. A rule pydantic cannot state raises
``PydanticCustomError`` with its own message, which is kept as written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from herald_core.errors import InvalidRequest, PayloadTooLarge

T = TypeVar("T")

PATTERN_MEANINGS: dict[str, str] = {}
"""What a string pattern means, for its error message ("is not a target name or
namespace/name"); filled by :func:`pattern` where each pattern is defined."""


def pattern(regex: str, meaning: str) -> str:
    """Register ``regex`` with the words its errors use; returns ``regex``."""
    PATTERN_MEANINGS[regex] = meaning
    return regex


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__ if isinstance(value, list | dict) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """``('alerts', 0, 'labels')`` as ``alerts[0].labels``; union tags (``<...>``) left out.
    ``prefix`` names the whole value (``[3].``, ``line 4: ``); the root is ``body``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("<"):
            continue
        else:
            path += f".{part}" if path else part
    if not path:
        return prefix.rstrip(".: ") or "body"
    return prefix + path


def problem(error: ErrorDetails, descriptions: Mapping[str, str] | None = None) -> str:
    """What is wrong, in words a person can act on."""
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        name = str(error["loc"][-1]) if error["loc"] else ""
        hint = (descriptions or {}).get(name)
        return f"is required ({hint.rstrip('.')})" if hint else "is required"
    if kind == "extra_forbidden":
        accepted = (descriptions or {}).get("<fields>")
        return f"unknown field (accepted: {accepted})" if accepted else "unknown field"
    if kind == "string_type":
        return f"must be a string, got {_shown(given)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a JSON object, got {_shown(given)}"
    if kind == "list_type":
        return f"must be a list, got {_shown(given)}"
    if kind == "bool_type" or kind == "bool_parsing":
        return f"must be true or false, got {_shown(given)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {_shown(given)}"
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", ""))
        if "," not in expected and " or " not in expected:
            return f"must be {expected}, got {_shown(given)}"
        expected = expected.replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}, got {_shown(given)}"
    if kind == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(str(ctx.get("pattern")), "does not have the right form")
        return f"{_shown(given)} {meaning}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "is empty: give a value, or leave the field out"
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "is an empty list: give at least one item"
        return f"must have at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = {
            "greater_than_equal": "at least",
            "less_than_equal": "at most",
            "greater_than": "more than",
            "less_than": "less than",
        }[kind]
        limit = next(iter(ctx.values()), "")
        return f"must be {bound} {limit}, got {_shown(given)}"
    if kind == "uuid_parsing" or kind == "uuid_type":
        return f"{_shown(given)} is not a UUID"
    if kind == "none_required":
        return "must be null"
    return str(error["msg"])  # PydanticCustomError: our own words, kept as written


MAX_LISTED = 10
"""Problems an error message lists; past that it counts them (a list of 1000 bad jobs)."""


def invalid(
    exc: ValidationError, *, prefix: str = "", descriptions: Mapping[str, str] | None = None
) -> InvalidRequest:
    """One :class:`InvalidRequest` naming the first problem's field, its message listing
    every problem (``field: problem; field: problem``); a :class:`PayloadTooLarge` when a
    problem it lists is a payload over HERALD_MAX_PAYLOAD_BYTES."""
    errors = exc.errors(include_url=False)
    parts = [(field_path(e["loc"], prefix), problem(e, descriptions)) for e in errors[:MAX_LISTED]]
    field, first = parts[0]
    rest = [f"{f}: {p}" for f, p in parts[1:]]
    if len(errors) > MAX_LISTED:
        rest.append(f"and {len(errors) - MAX_LISTED} more problems")
    too_large = any(e["type"] == PayloadTooLarge.error_type for e in errors[:MAX_LISTED])
    kind = PayloadTooLarge if too_large else InvalidRequest
    return kind(field, "; ".join([first, *rest]))


def validate(
    adapter: TypeAdapter[T],
    data: object,
    *,
    prefix: str = "",
    context: dict[str, Any] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> T:
    """``data`` validated by ``adapter``, or :class:`InvalidRequest`."""
    try:
        return adapter.validate_python(data, context=context)
    except ValidationError as exc:
        raise invalid(exc, prefix=prefix, descriptions=descriptions) from None


def hints(*models: type[BaseModel]) -> dict[str, str]:
    """What the error messages of ``models`` say of their fields: each one's description
    (for "is required: ..."), and the accepted names (for "unknown field")."""
    out: dict[str, str] = {}
    names: list[str] = []
    for model in models:
        for name, info in model.model_fields.items():
            key = info.alias or name
            names.append(key)
            if info.description:
                out[key] = info.description
    out["<fields>"] = ", ".join(names)
    return out
