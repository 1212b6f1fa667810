"""Check objects against the CRDs in ``crds/`` the way the Kubernetes apiserver would.

Without a cluster, three steps of the apiserver's handling of a custom resource are
reproduced here:

1. **Defaulting** (:func:`apply_defaults`): ``null`` in a field that is not ``nullable`` is
   dropped, then every missing property that has a ``default`` gets it, recursively, so a
   defaulted ``{}`` receives its own properties' defaults.
2. **Schema validation** (:func:`to_json_schema` + ``jsonschema``): the structural OpenAPI v3
   schema is converted to JSON Schema 2020-12 (``nullable``, boolean ``exclusiveMinimum``,
   ``x-kubernetes-*`` keys, Go regexp anchors) and checked with the formats the apiserver
   checks (``date-time``, ``uri``, ``uuid``). Unknown fields are errors, as with ``kubectl``'s
   default strict field validation (the apiserver alone would prune them silently).
3. **CEL rules** (:func:`check_rules`): every ``x-kubernetes-validations`` rule is evaluated
   with cel-python, ``self`` typed by the schema as the apiserver types it (numbers are
   doubles, ``date-time`` strings are timestamps) and ``oldSelf`` bound on updates. Rules
   run on schema-valid objects only, so every reported problem has one cause.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from tests.helpers import ROOT

CRD_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "examples"
VERSION = "v1alpha1"

Schema = dict[str, Any]


# --- loading -----------------------------------------------------------------------------


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file, empty ones left out."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


@functools.cache
def crds() -> dict[str, Schema]:
    """Every CRD in ``crds/``, by kind."""
    found: dict[str, Schema] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in load_documents(path):
            found[doc["spec"]["names"]["kind"]] = doc
    return found


def version_of(crd: Mapping[str, Any], name: str = VERSION) -> Schema:
    for version in crd["spec"]["versions"]:
        if version["name"] == name:
            return dict(version)
    raise KeyError(f"{crd['metadata']['name']} has no version {name}")


def schema_of(kind: str) -> Schema:
    """The ``openAPIV3Schema`` of a kind's (only) version."""
    return dict(version_of(crds()[kind])["schema"]["openAPIV3Schema"])


def walk(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path: ``spec.retry``, ``spec.headers.*``, ``spec.jobIds[*]``."""
    yield path, dict(schema)
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, join(path, name))
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from walk(schema["additionalProperties"], join(path, "*"))
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[*]")


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# --- 1. defaulting -----------------------------------------------------------------------


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` as the apiserver stores it: nulls pruned, defaults filled in (a new copy)."""
    if isinstance(value, Mapping) and schema.get("type") == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        result: dict[str, Any] = {}
        for name, item in value.items():
            sub = props.get(name, extra if isinstance(extra, Mapping) else None)
            if item is None and sub is not None and not sub.get("nullable", False):
                continue  # the apiserver prunes null in a non-nullable field, then defaults it
            result[name] = copy.deepcopy(item) if sub is None else apply_defaults(sub, item)
        for name, sub in props.items():
            if name not in result and "default" in sub:
                result[name] = apply_defaults(sub, copy.deepcopy(sub["default"]))
        return result
    if isinstance(value, list) and schema.get("type") == "array" and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return copy.deepcopy(value)


# --- 2. schema validation ----------------------------------------------------------------


def to_json_schema(node: Mapping[str, Any], *, strict: bool = True) -> Schema:
    """A structural OpenAPI v3 schema node as JSON Schema 2020-12.

    ``strict``: objects with ``properties`` reject unknown fields (``kubectl``'s default)."""
    out: Schema = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in (
            "nullable",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "default",
        ):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, strict=strict) for name, sub in value.items()}
        elif key in ("additionalProperties", "items", "not"):
            out[key] = to_json_schema(value, strict=strict) if isinstance(value, Mapping) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub, strict=strict) for sub in value]
        elif key == "pattern":
            out[key] = go_pattern(value)
        else:
            out[key] = copy.deepcopy(value)
    # OpenAPI 3.0: a boolean next to minimum/maximum; JSON Schema: the bound itself.
    if node.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        kinds = out.get("type", [])
        out["type"] = [*(kinds if isinstance(kinds, list) else [kinds]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        strict
        and node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def go_pattern(pattern: str) -> str:
    """A Go (RE2) ``pattern`` for Python's ``re``: a final ``$`` is the end of the text in
    Go, while Python's also matches before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_UUID = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|[0-9a-f]{32})\Z",
    re.IGNORECASE,
)
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if match is None:
        return False
    date, time, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    datetime.datetime.fromisoformat(f"{date}T{time}{(fraction or '')[:7]}{zone}")
    return True


def _is_uri(value: object) -> bool:
    # Go's url.ParseRequestURI: an absolute URI or an absolute path, no spaces.
    if not isinstance(value, str):
        return True
    return (bool(_URI_SCHEME.match(value)) or value.startswith("/")) and not any(
        c.isspace() or ord(c) < 0x20 for c in value
    )


def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or _UUID.match(value) is not None


FORMAT_CHECKER.checks("date-time", raises=ValueError)(_is_date_time)
FORMAT_CHECKER.checks("uri")(_is_uri)
FORMAT_CHECKER.checks("uuid")(_is_uuid)


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = to_json_schema(schema_of(kind))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER)


def format_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else join(path, str(part))
    return path


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern":  # the pattern as the CRD spells it (see go_pattern)
        pattern = str(error.validator_value)
        if pattern.endswith(r"\Z"):
            pattern = pattern[:-2] + "$"
        return f"{error.instance!r} does not match {pattern!r}"
    return str(error.message)


# --- 3. CEL rules --------------------------------------------------------------------------


def _lower_ascii(text: celtypes.StringType) -> celtypes.StringType:
    # Kubernetes' strings extension: lowercases ASCII letters only.
    return celtypes.StringType("".join(c.lower() if c.isascii() else c for c in text))


# Functions of the Kubernetes CEL environment that cel-python lacks (used by the CRDs).
KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {"lowerAscii": _lower_ascii}


@functools.cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=KUBERNETES_FUNCTIONS)


def compile_rule(rule: str) -> None:
    """Raises if cel-python cannot parse ``rule``."""
    _program(rule)


def to_cel(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` typed for CEL by its schema, as the apiserver types ``self``."""
    if value is None:
        return None
    kind = schema.get("type")
    if kind == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(extra, v) for k, v in value.items()}
            )
        if props:
            return celtypes.MapType(
                {
                    celtypes.StringType(k): to_cel(props[k], v)
                    for k, v in value.items()
                    if k in props  # unknown fields are pruned before the rules run
                }
            )
        return json_to_cel(value)
    if kind == "array":
        return celtypes.ListType([to_cel(schema.get("items", {}), v) for v in value])
    if kind == "integer":
        return celtypes.IntType(value)
    if kind == "number":
        return celtypes.DoubleType(value)
    if kind == "boolean":
        return celtypes.BoolType(value)
    if kind == "string" and schema.get("format") in ("date-time", "date"):
        return celtypes.TimestampType(value)
    if kind == "string":
        return celtypes.StringType(value)
    return json_to_cel(value)


_OLD_SELF = re.compile(r"\boldSelf\b")


def is_transition_rule(rule: str) -> bool:
    """Rules that read ``oldSelf`` run only on updates, when the old value exists."""
    return _OLD_SELF.search(rule) is not None


@dataclasses.dataclass(frozen=True)
class Problem:
    """One reason an object is rejected, as ``kubectl`` would print it."""

    path: str
    message: str
    rule: str | None = None
    """The CEL rule that failed; None for a schema error."""

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


def check_rules(
    schema: Mapping[str, Any], new: Any, old: Any = None, path: str = ""
) -> list[Problem]:
    """Every ``x-kubernetes-validations`` rule that ``new`` breaks (``old``: on update)."""
    problems: list[Problem] = []
    if new is None:
        return problems
    for spec in schema.get("x-kubernetes-validations", []):
        rule = spec["rule"]
        activation = {"self": to_cel(schema, new)}
        if is_transition_rule(rule):
            if old is None:
                continue
            activation["oldSelf"] = to_cel(schema, old)
        message = spec.get("message") or f"failed rule: {rule}"
        try:
            result: Any = _program(rule).evaluate(activation)
        except CELEvalError as exc:
            problems.append(Problem(path, f"{message} (evaluation error: {exc.args[0]})", rule))
            continue
        if isinstance(result, CELEvalError):
            problems.append(Problem(path, f"{message} (evaluation error: {result.args[0]})", rule))
        elif not isinstance(result, celtypes.BoolType) or not result:
            problems.append(Problem(path, message, rule))
    old_map = old if isinstance(old, Mapping) else {}
    if isinstance(new, Mapping):
        props: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, value in new.items():
            sub = props.get(name, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                problems += check_rules(sub, value, old_map.get(name), join(path, name))
    elif isinstance(new, list) and "items" in schema:
        # Items of atomic lists are not correlated with old ones: no oldSelf below here.
        for index, item in enumerate(new):
            problems += check_rules(schema["items"], item, None, f"{path}[{index}]")
    return problems


# --- all together --------------------------------------------------------------------------


def validate(manifest: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[Problem]:
    """Why the apiserver (with ``kubectl``'s strict field validation) would reject
    ``manifest``, created or (with ``old``, the stored object) updated; [] if it would not."""
    kind = manifest["kind"]
    schema = schema_of(kind)
    obj = apply_defaults(schema, manifest)
    problems = [
        Problem(format_path(error.absolute_path), _message(error))
        for error in sorted(
            _validator(kind).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]
        )
    ]
    if problems:
        return problems
    stored = apply_defaults(schema, old) if old is not None else None
    return check_rules(schema, obj, stored)


def all_rules() -> list[tuple[str, str, Schema]]:
    """(kind, path, rule spec) of every CEL rule in the CRDs."""
    return [
        (kind, path, spec)
        for kind in sorted(crds())
        for path, node in walk(schema_of(kind))
        for spec in node.get("x-kubernetes-validations", [])
    ]
