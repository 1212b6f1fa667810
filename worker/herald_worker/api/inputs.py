"""A request's query, path and body read through their models (``models.py``): every
problem reported with its field path, as :class:`~herald_core.errors.InvalidRequest`."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from herald_core.errors import InvalidRequest
from herald_core.validation import hints, validate
from herald_worker.api.errors import read_json

M = TypeVar("M", bound=BaseModel)


@functools.cache
def adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


@functools.cache
def _hints(model: Any) -> dict[str, str]:
    return hints(model) if isinstance(model, type) and issubclass(model, BaseModel) else {}


@functools.cache
def _names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(info.alias or name for name, info in model.model_fields.items())


def query(request: web.Request, model: type[M]) -> M:
    """``model`` from the query string. A parameter given empty is refused, not read as
    absent, so that what the document forbids the server refuses too."""
    names = _names(model)
    for name in names:
        if request.query.get(name) == "":
            raise InvalidRequest(name, "is empty: give a value, or leave the parameter out")
    values = {name: request.query[name] for name in names if name in request.query}
    parsed: M = validate(adapter(model), values, descriptions=_hints(model))
    return parsed


def path(request: web.Request, model: type[M]) -> M:
    parsed: M = validate(adapter(model), dict(request.match_info), descriptions=_hints(model))
    return parsed


async def body(request: web.Request, model: Any) -> Any:
    return validate(adapter(model), await read_json(request), descriptions=_hints(model))
