"""The base of Herald's custom resource specs: one pydantic model per spec, from which come
the parser, its error messages and the CRD's ``openAPIV3Schema`` (``herald_model.crd_gen``).

A spec model says everything about a field in one place: its type (``Literal`` for an enum),
bounds (``Field(ge=..., le=...)``), default, description (``Field(description=...)`` or the
class docstring of a sub-object), alias (the manifest's camelCase name) and, where pydantic
has no word for it, the Kubernetes extensions (``json_schema_extra``: CEL rules through
:func:`rules`, ``format``, ``x-kubernetes-list-type``). :func:`openapi_schema` turns the
model into a structural schema the API server accepts; :func:`check` validates a spec and
turns pydantic's errors into one line per problem, ``field.path: what to do``, worded from
that same schema (bounds, choices, known fields).

Messages never repeat a string the user gave unless it is a choice or a name: a string may
be a secret (a URL with credentials). Validators that need a specific message raise
:func:`problem`; a rule about several fields pins its message to one of them (``field=``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Annotated, Any, TypeGuard, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

Schema = dict[str, Any]
M = TypeVar("M", bound=BaseModel)

# Key order of the generated schema nodes: what a reader looks for first.
_ORDER = (
    "type",
    "format",
    "description",
    "required",
    "default",
    "enum",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "nullable",
)


class SpecModel(BaseModel):
    """A custom resource's spec, or one of its sub-objects.

    Strict as the API server is: a number is never a string or a boolean, unknown fields are
    refused (``kubectl``'s strict field validation), and ``null`` is a missing field (the API
    server prunes it and applies the default)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_missing(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None}
        return data

    def to_config(self) -> dict[str, Any]:
        """The spec as the API server stores it: camelCase, defaults filled in."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` for CEL rules: (rule, message) pairs. A rule the parser checks
    too is written next to its Python check, with the same message."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in pairs]}


def problem(message: str, *, field: str | None = None) -> PydanticCustomError:
    """An error for a validator to raise. ``field``: the sub-field the message is about,
    when a rule of a whole object is (``retry.maxBackoffSeconds``, not ``retry``)."""
    context = {"field": field} if field else None
    # Braces in the message are text, not placeholders.
    return PydanticCustomError("herald", message.replace("{", "{{").replace("}", "}}"), context)


def no_default(schema: Schema) -> None:
    """``json_schema_extra`` of a field whose default is computed (it has none in the CRD)."""
    schema.pop("default", None)


# DNS-1123 subdomain, as Kubernetes requires of object names. Used with fullmatch in Python
# ("$" would also match before a final newline); the CRD's pattern is anchored.
NAME_PATTERN = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_NAME = re.compile(NAME_PATTERN)


def is_object_name(value: object) -> bool:
    """Whether ``value`` is a Kubernetes object name (a DNS-1123 subdomain)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def object_name(what: str, hint: str = "") -> Any:
    """The type of a field naming a Kubernetes object (``what``: "a Secret")."""

    def checked(value: object) -> object:
        if isinstance(value, str) and not is_object_name(value):
            shown = repr(value[:253])
            raise problem(
                f"must be the name of {what} (a DNS-1123 subdomain: lowercase letters, digits, "
                f"'-' and '.'), got {shown}{hint}"
            )
        return value

    return Annotated[
        str, Field(max_length=253, pattern=f"^{NAME_PATTERN}$"), BeforeValidator(checked)
    ]


# --- the structural schema ---------------------------------------------------------------


@functools.cache
def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model``, as a CRD holds it: inlined (no
    ``$ref``), optional fields without ``anyOf``/``null`` (the API server prunes null),
    OpenAPI 3.0's boolean ``exclusiveMinimum``, no titles."""
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="{model}")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Schema:
    out = dict(node)
    for combinator in ("allOf", "anyOf"):
        if combinator in out:
            variants = [v for v in out.pop(combinator) if v != {"type": "null"}]
            if len(variants) != 1:
                raise TypeError(f"a CRD field has one type, not {variants}")
            out = {**variants[0], **out}
    if "$ref" in out:
        # The field's own keys (description, default) win over the sub-object's.
        out = {**_structural(defs[out.pop("$ref")], defs), **out}
    out.pop("title", None)
    if "description" in out:
        out["description"] = " ".join(out["description"].split())  # docstrings wrap
    if "x-kubernetes-validations" in out:
        out["x-kubernetes-validations"] = [
            {"rule": r["rule"], "message": r["message"]} for r in out["x-kubernetes-validations"]
        ]
    out.pop("propertyNames", None)
    if out.get("default", 0) is None:
        del out["default"]
    if "default" in out:
        out["default"] = _plain(out["default"])
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in out and out[key] is not True:
            out[key.replace("exclusiveM", "m")] = out[key]
            out[key] = True
    for key in ("minimum", "maximum"):
        if key in out:
            out[key] = _plain(out[key])
    if "properties" in out:
        out["properties"] = {k: _structural(v, defs) for k, v in out["properties"].items()}
    for key in ("additionalProperties", "items"):
        if isinstance(out.get(key), Mapping):
            out[key] = _structural(out[key], defs)
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)  # extra="forbid": structural schemas prune
    return {k: out[k] for k in sorted(out, key=_rank)}


def _rank(key: str) -> tuple[int, str]:
    if key in _ORDER:
        return _ORDER.index(key), key
    if key.startswith("x-kubernetes-"):
        return len(_ORDER), key
    return len(_ORDER) + 1, key  # properties, additionalProperties, items: the subtree last


def _plain(value: Any) -> Any:
    """A default as written in YAML: 10, not 10.0; no null members."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- errors ------------------------------------------------------------------------------


class SpecError(Exception):
    """A spec failed its model; ``problems`` are ``path: message`` lines, one per cause."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def check(model: type[M], data: object, *, root: str = "spec") -> M:
    """``data`` validated by ``model``; :class:`SpecError` naming every problem."""
    if not isinstance(data, Mapping):
        raise SpecError([f"{root}: must be an object, got {_kind(data)}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        schema = openapi_schema(model)
        found = [_describe(error, schema, root) for error in exc.errors(include_url=False)]
        raise SpecError(list(dict.fromkeys(found))) from None


def _describe(error: ErrorDetails, schema: Schema, root: str) -> str:
    loc = [part for part in error["loc"] if part != "[key]"]
    context = error.get("ctx") or {}
    if error["type"] == "herald" and context.get("field"):
        loc.append(context["field"])
    node, parent = _node(schema, loc)
    message = _message(error, node, parent)
    if error["type"] == "missing" and len(loc) > 1:
        message += f" when {loc[-2]} is set"
    return f"{_path(root, loc)}: {message}"


def _node(schema: Schema, loc: Sequence[int | str]) -> tuple[Schema, Schema]:
    """The schema node at ``loc`` and its parent's ({} when the path leaves the schema)."""
    parent: Schema = {}
    node = schema
    for part in loc:
        parent = node
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), Mapping):
            node = node["additionalProperties"]
        else:
            node = {}
    return node, parent


def _path(root: str, loc: Sequence[int | str]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isprintable() and part == part.strip():
            path += f".{part}"
        else:
            path += f".{part!r}"  # a key with a control character or a space around it
    return path


_KINDS: Mapping[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
}


def _message(error: ErrorDetails, node: Schema, parent: Schema) -> str:
    kind, value = error["type"], error["input"]
    handler = _MESSAGES.get(kind)
    if handler is not None:
        return handler(node, parent, value)
    if kind == "herald":
        return error["msg"]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = _KINDS.get(node.get("type", ""), "something else")
        if node.get("format") == "uuid":
            expected = "a UUID"
        return f"must be {expected}, got {_shown(value, node)}"
    return error["msg"][:1].lower() + error["msg"][1:]


def _shown(value: object, node: Schema | None = None) -> str:
    """``value`` for a message: numbers and booleans as written, anything else by kind (a
    string may be a secret), but for a choice, a time or a UUID."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str) and node and ("enum" in node or node.get("format") in _SHOWN):
        return repr(value[:64])
    return _kind(value)


_SHOWN = ("date-time", "uuid")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _bounds(node: Schema) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    parts = []
    if low is not None:
        exclusive = node.get("exclusiveMinimum")
        parts.append(f"{'greater than' if exclusive else 'at least'} {_number(low)}")
    if high is not None:
        parts.append(f"at most {_number(high)}")
    return " and ".join(parts)


def _bound(node: Schema, parent: Schema, value: object) -> str:
    return f"must be {_bounds(node)}, got {_shown(value)}"


def _length(node: Schema, parent: Schema, value: object) -> str:
    size = len(value) if isinstance(value, Sized) else "?"
    if node.get("type") == "string":
        return f"must be at most {node.get('maxLength')} characters long, got {size}"
    what = "entries" if node.get("type") == "object" else "items"
    low = node.get("minItems", node.get("minProperties"))
    high = node.get("maxItems", node.get("maxProperties"))
    span = f"{low} to {high}" if low is not None else f"at most {high}"
    return f"must have {span} {what}, got {size}"


def _missing(node: Schema, parent: Schema, value: object) -> str:
    choices = f" (one of {', '.join(node['enum'])})" if "enum" in node else ""
    return f"is required{choices}"


def _unknown(node: Schema, parent: Schema, value: object) -> str:
    known = ", ".join(sorted(parent.get("properties", {})))
    return f"unknown field (known: {known})"


def _choice(node: Schema, parent: Schema, value: object) -> str:
    return f"must be one of {', '.join(node.get('enum', []))}, got {_shown(value, node)}"


def _pattern(node: Schema, parent: Schema, value: object) -> str:
    return f"must match the pattern {node.get('pattern')}"


def _finite(node: Schema, parent: Schema, value: object) -> str:
    return f"must be a finite number, got {_shown(value)}"


def _time(node: Schema, parent: Schema, value: object) -> str:
    return f"must be an RFC 3339 time (e.g. 2026-11-20T00:00:00Z), got {_shown(value, node)}"


def _zone(node: Schema, parent: Schema, value: object) -> str:
    return "has no time zone (add Z or +00:00)"


_MESSAGES: Mapping[str, Callable[[Schema, Schema, object], str]] = {
    "missing": _missing,
    "extra_forbidden": _unknown,
    "literal_error": _choice,
    "enum": _choice,
    "greater_than": _bound,
    "greater_than_equal": _bound,
    "less_than": _bound,
    "less_than_equal": _bound,
    "too_short": _length,
    "too_long": _length,
    "string_too_long": _length,
    "string_pattern_mismatch": _pattern,
    "finite_number": _finite,
    "datetime_type": _time,
    "datetime_parsing": _time,
    "datetime_from_date_parsing": _time,
    "timezone_aware": _zone,
}


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (not a boolean), neither infinite nor NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
