"""The OpenAPI 3.1 document the worker serves at /openapi.json, generated from the route
table it is given (``routes.py`` builds it from its own) and the models (``models.py``):
nothing in it is written twice. A
test keeps it valid (openapi-spec-validator) and in step with the routes the server has."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from herald_model.submission import PAYLOAD_MARK, PAYLOAD_SCHEMA
from herald_worker.api import models
from herald_worker.api.route import Route

REF = "#/components/schemas/{model}"


def _allows_null(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(_allows_null(s) for s in schema.get("anyOf", []) if isinstance(s, dict))


def _tidy(node: Any) -> Any:
    """Without pydantic's titles, and without a null default where null is not allowed
    (a field that may only be left out)."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if out.pop(PAYLOAD_MARK, False):
        out["$ref"] = REF.format(model="Payload")
    if "default" in out and out["default"] is None and not _allows_null(out):
        del out["default"]
    return out


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Payload": PAYLOAD_SCHEMA}

    def of(self, kind: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        """The schema of ``kind``; models (and what they refer to) become components."""
        raw = TypeAdapter(kind).json_schema(ref_template=REF, mode=mode)
        self.components.update(_tidy(raw.pop("$defs", {})))
        schema: dict[str, Any] = _tidy(raw)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            self.components[kind.__name__] = schema
            return {"$ref": REF.format(model=kind.__name__)}
        return schema

    def parameters(self, model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
        if model is None:
            return []
        schema = _tidy(TypeAdapter(model).json_schema(ref_template=REF, mode="validation"))
        self.components.update(_tidy(schema.pop("$defs", {})))
        required = set(schema.get("required", ()))
        out = []
        for name, prop in schema["properties"].items():
            description = prop.pop("description", None)
            options = [s for s in prop.get("anyOf", []) if s != {"type": "null"}]
            if len(options) == 1:  # a parameter is left out, never null
                prop = {**options[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
                if prop.get("default", 0) is None:
                    del prop["default"]
            param = {"name": name, "in": where, "required": where == "path" or name in required}
            out.append(
                {**param, **({"description": description} if description else {}), "schema": prop}
            )
        return out


def _json(
    schema: dict[str, Any], description: str, media: str = "application/json"
) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


COMMON_ERRORS = {
    400: "The request is malformed; the error names the field and the problem. Rules a "
    "schema cannot state are in the descriptions (a time window's failedBefore after its "
    "failedAfter).",
    401: "HERALD_API_TOKEN is set and the bearer token is missing or wrong; or, with "
    "HERALD_API_AUTH=kubernetes, the token is missing or the Kubernetes API does not accept it.",
    403: "HERALD_API_AUTH=kubernetes and the caller lacks the RBAC permission this operation "
    "needs (the message names it; docs/authentication.md lists them).",
    413: "The request body (16 MiB) or a payload (HERALD_MAX_PAYLOAD_BYTES) is too large.",
    503: "PostgreSQL is not reachable, or (HERALD_API_AUTH=kubernetes) the Kubernetes API did "
    "not answer a review in time; nothing was written. Retry later.",
}


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "operationId": route.operation_id}
    if route.description:
        op["description"] = route.description
    parameters = schemas.parameters(route.params, "path") + schemas.parameters(route.query, "query")
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.of(route.body, "validation")}},
        }
    responses: dict[str, Any] = {}
    for status, reply in route.replies.items():
        answer = _json(schemas.of(reply.model, "serialization"), reply.description, reply.media)
        if reply.links:
            answer["links"] = dict(reply.links)
        responses[str(status)] = answer
    errors = dict(route.errors)
    if parameters or route.body is not None or not route.public:
        errors.setdefault(400, COMMON_ERRORS[400])
    if route.body is not None:
        errors.setdefault(413, COMMON_ERRORS[413])
    if route.public:
        op["security"] = []
    else:
        errors.setdefault(401, COMMON_ERRORS[401])
        errors.setdefault(403, COMMON_ERRORS[403])
        errors.setdefault(503, COMMON_ERRORS[503])
    error = schemas.of(models.Error, "serialization")
    for status, description in sorted(errors.items()):
        responses[str(status)] = _json(error, description)
    op["responses"] = dict(sorted(responses.items()))
    return op


def build(routes: Iterable[Route]) -> dict[str, Any]:
    try:
        version = metadata.version("herald")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        version = "dev"
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald worker API",
            "version": version,
            "description": "Submit jobs, look them up, read queue statistics, manage dead "
            "letters, and receive Alertmanager notifications. JSON everywhere; errors are "
            '{"error": {"status", "field", "message"}}.',
        },
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required when HERALD_API_TOKEN is set.",
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
