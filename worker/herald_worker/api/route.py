"""One row of the route table (``routes.py``): an endpoint with the models of its path,
query and body and its answers. The application binds rows to aiohttp (:meth:`Route.bind`)
and ``openapi.py`` documents them."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from herald_worker.api import inputs

Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class Reply:
    """One documented answer: its model (None: no body schema) and what it means."""

    model: Any
    description: str
    media: str = "application/json"
    links: Mapping[str, Mapping[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    replies: Mapping[int, Reply]
    errors: Mapping[int, str] = dataclasses.field(default_factory=dict)
    """Error answers particular to this route (the model is always ``Error``)."""
    params: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: Any = None
    reads_body: bool = False
    public: bool = False
    """Open without a token."""
    description: str | None = None

    def bind(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler: validates the declared inputs, then calls ours."""
        declared = {
            "path": self.params is not None,
            "query": self.query is not None,
            "body": self.body is not None and not self.reads_body,
        }
        accepted = set(inspect.signature(self.handler).parameters) - {"request"}
        wanted = {name for name, given in declared.items() if given}
        if accepted != wanted:
            raise TypeError(f"{self.operation_id}: the handler takes {accepted}, the row {wanted}")
        params, query, body, handler = self.params, self.query, self.body, self.handler

        async def handle(request: web.Request) -> web.StreamResponse:
            kwargs: dict[str, Any] = {}
            if params is not None:
                kwargs["path"] = inputs.path(request, params)
            if query is not None:
                kwargs["query"] = inputs.query(request, query)
            if "body" in wanted:
                kwargs["body"] = await inputs.body(request, body)
            return await handler(request, **kwargs)

        return handle
