"""The CustomResourceDefinitions in ``crds/``, the manifests in ``examples/`` and the
invalid manifests in ``tests/unit/invalid/``, checked without a cluster (see crd_schema).

The spec schemas are generated from the spec models (``herald_model.crd_gen``), which also
parse the same manifests (in a cluster and locally): these tests prove the committed files
are the generator's output, that the API server's checks (schema and CEL, reproduced by
crd_schema) and the models' agree on defaults, bounds and invalid manifests, and list the
few cases where only the CRD guards.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import standardwebhooks
import yaml

from herald_core.errors import InvalidTarget
from herald_model import crd_gen
from herald_model.replay_spec import ReplaySpec, parse_replay_spec
from herald_model.spec_base import SpecError
from herald_model.target_spec import RESERVED_HEADERS, check_url, parse_spec, parse_target

from . import crd_schema
from .crd_schema import (
    CRD_DIR,
    EXAMPLES_DIR,
    ROOT,
    Problem,
    apply_defaults,
    crds,
    load_documents,
    schema_of,
    to_json_schema,
    validate,
    walk,
)

INVALID_DIR = Path(__file__).parent / "invalid"
KINDS = ("PublishingTarget", "DeadLetterReplay")
OPENAPI_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.relative_to(EXAMPLES_DIR)}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted(EXAMPLES_DIR.rglob("*.yaml"))
        for doc in load_documents(path)
    ]


EXAMPLES = example_documents()
RESOURCES = [(name, doc) for name, doc in EXAMPLES if doc["kind"] in KINDS]
TARGETS = [(name, doc) for name, doc in EXAMPLES if doc["kind"] == "PublishingTarget"]
# (file, Secret name) -> Secret: a target's Secret is in the target's file.
SECRETS = {
    (name.split(":")[0], doc["metadata"]["name"]): doc
    for name, doc in EXAMPLES
    if doc["kind"] == "Secret"
}


def spec_schema(kind: str = "PublishingTarget") -> dict[str, Any]:
    return dict(schema_of(kind)["properties"]["spec"])


# --- shape of the CRDs -------------------------------------------------------------------

NAMES = {
    "PublishingTarget": {
        "kind": "PublishingTarget",
        "listKind": "PublishingTargetList",
        "plural": "publishingtargets",
        "singular": "publishingtarget",
        "shortNames": ["pt"],
        "categories": ["herald"],
    },
    "DeadLetterReplay": {
        "kind": "DeadLetterReplay",
        "listKind": "DeadLetterReplayList",
        "plural": "deadletterreplays",
        "singular": "deadletterreplay",
        "shortNames": ["dlr"],
        "categories": ["herald"],
    },
}

# (name, type, jsonPath, priority): what `kubectl get` shows (priority 1: with -o wide).
COLUMNS = {
    "PublishingTarget": [
        ("Type", "string", ".spec.type", 0),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("Circuit", "string", ".status.circuit.state", 0),
        ("Depth", "integer", ".status.depth.total", 0),
        ("Dead", "integer", ".status.deadLetters.waiting", 0),
        ("Events", "string", ".spec.subscriptions.eventTypes", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("URL", "string", ".spec.url", 1),
        ("Paused", "boolean", ".status.paused", 1),
        ("Filter", "string", ".spec.subscriptions.filter", 1),
    ],
    "DeadLetterReplay": [
        ("Target", "string", ".spec.target", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Matched", "integer", ".status.matched", 0),
        ("Replayed", "integer", ".status.replayed", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("DryRun", "boolean", ".spec.dryRun", 1),
        ("Message", "string", ".status.message", 1),
    ],
}


def test_crd_files_hold_both_kinds() -> None:
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == [
        "deadletterreplays.yaml",
        "publishingtargets.yaml",
    ]
    assert sorted(crds()) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_identity(kind: str) -> None:
    crd = crds()[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.herald.dev"
    assert spec["group"] == "herald.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == NAMES[kind]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}
    root = version["schema"]["openAPIV3Schema"]
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(root["properties"])
    assert root["required"] == ["spec"]


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns(kind: str) -> None:
    columns = crd_schema.version_of(crds()[kind])["additionalPrinterColumns"]
    assert [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in columns
    ] == COLUMNS[kind]
    # Every column points at a field the schema defines, with a matching type.
    schema = schema_of(kind)
    for column in columns:
        if column["jsonPath"].startswith(".metadata."):
            continue
        path = re.sub(r"\[\?\(.*\)\]", "", column["jsonPath"]).strip(".").split(".")
        node = schema
        for part in path:
            node = node.get("items", node)["properties"][part]
        expected = {"date": "string"}.get(column["type"], column["type"])
        if node["type"] == "array" and expected == "string":  # kubectl prints a list as JSON
            node = node["items"]
        assert node["type"] == expected, column


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    """Every node typed and described, nothing kept unknown, specifics well-formed."""
    for path, node in walk(schema_of(kind)):
        where = f"{kind} {path or '<root>'}"
        assert node.get("type") in OPENAPI_TYPES, f"{where}: no type"
        if path == "metadata":
            # The API server refuses anything but type (and name/generateName) here.
            assert node == {"type": "object"}, where
            continue
        assert node.get("description", "").strip(), f"{where}: no description"
        assert "x-kubernetes-preserve-unknown-fields" not in node, where
        assert not ("properties" in node and "additionalProperties" in node), where
        assert set(node.get("required", [])) <= set(node.get("properties", {})), where
        if node["type"] == "array":
            assert "items" in node, where
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), where
        for value in node.get("enum", []):
            assert isinstance(value, str) and node["type"] == "string", where
        for spec in node.get("x-kubernetes-validations", []):
            assert set(spec) == {"rule", "message"}, where  # a message a user can act on
        if path.startswith("metadata"):
            assert path == "metadata" and set(node) == {"type", "description"}, where


@pytest.mark.parametrize("kind", KINDS)
def test_status_is_fully_described(kind: str) -> None:
    status = schema_of(kind)["properties"]["status"]
    assert status["properties"], kind
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert set(condition["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_publishing_target_status_fields() -> None:
    status = schema_of("PublishingTarget")["properties"]["status"]["properties"]
    assert set(status) == {
        "observedGeneration",
        "conditions",
        "circuit",
        "depth",
        "deadLetters",
        "paused",
        "pausedReason",
        "lastDeliveryTime",
        "lastError",
        "delivered",
        "deadLettered",
        "failedAttempts",
        "signingPublicKeys",
    }
    assert status["circuit"]["properties"]["state"]["enum"] == ["closed", "open", "half_open"]
    assert status["circuit"]["properties"]["openUntil"]["nullable"] is True
    assert set(status["depth"]["properties"]) == {"high", "medium", "low", "total", "ready"}
    assert status["lastError"]["properties"]["class"]["enum"] == [
        "transient",
        "permanent",
        "unknown",
    ]
    for counter in ("delivered", "deadLettered", "failedAttempts"):
        assert status[counter]["format"] == "int64"


def test_dead_letter_replay_status_fields() -> None:
    status = schema_of("DeadLetterReplay")["properties"]["status"]["properties"]
    assert set(status) == {
        "phase",
        "matched",
        "replayed",
        "skipped",
        "startTime",
        "completionTime",
        "observedGeneration",
        "message",
        "conditions",
    }
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]


@pytest.mark.parametrize("kind", KINDS)
def test_converted_schema_is_valid_json_schema(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(to_json_schema(schema_of(kind)))


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_valid(kind: str) -> None:
    """The apiserver refuses a CRD whose defaults do not validate against their schema."""
    for path, node in walk(schema_of(kind)):
        if "default" in node:
            value = apply_defaults(node, node["default"])
            jsonschema.Draft202012Validator(
                to_json_schema(node), format_checker=crd_schema.FORMAT_CHECKER
            ).validate(value)
            assert not crd_schema.check_rules(node, value), path


def test_schema_converter_handles_openapi_specifics() -> None:
    converted = to_json_schema(
        {
            "type": "object",
            "description": "d",
            "properties": {
                "a": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
                "b": {"type": "string", "nullable": True, "enum": ["x"]},
                "c": {"x-kubernetes-int-or-string": True, "pattern": "^a$"},
            },
            "x-kubernetes-validations": [{"rule": "true"}],
        }
    )
    assert converted == {
        "type": "object",
        "description": "d",
        "properties": {
            "a": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "b": {"type": ["string", "null"], "enum": ["x", None]},
            "c": {"type": ["integer", "string"], "pattern": r"^a\Z"},
        },
        "additionalProperties": False,
    }


def test_defaulting_follows_the_apiserver() -> None:
    schema = spec_schema()
    defaulted = apply_defaults(schema, {"type": "pagerduty", "retry": None, "headers": None})
    assert defaulted["retry"] == {
        "maxAttempts": 5,
        "initialBackoffSeconds": 2,
        "maxBackoffSeconds": 30,
        "multiplier": 2,
        "jitterSeconds": 1,
    }
    assert defaulted["headers"] == {}
    assert "rateLimit" not in defaulted and "url" not in defaulted
    # A value given is kept; its siblings are defaulted.
    partial = apply_defaults(schema, {"type": "webhook", "circuitBreaker": {"openSeconds": 5}})
    assert partial["circuitBreaker"] == {
        "failureThreshold": 5,
        "openSeconds": 5,
        "halfOpenProbes": 1,
    }


# --- examples ------------------------------------------------------------------------------


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES_DIR.glob("*.yaml")}
    assert {
        "webhook-target.yaml",
        "slack-target.yaml",
        "pagerduty-target.yaml",
        "deadletterreplay.yaml",
    } <= names
    assert {doc["spec"]["type"] for _, doc in TARGETS} == {"webhook", "slack", "pagerduty"}
    assert (EXAMPLES_DIR / "README.md").is_file()


@pytest.mark.parametrize(("name", "doc"), RESOURCES, ids=[n for n, _ in RESOURCES])
def test_example_is_valid(name: str, doc: dict[str, Any]) -> None:
    assert validate(doc) == [], name


@pytest.mark.parametrize(("name", "doc"), RESOURCES, ids=[n for n, _ in RESOURCES])
def test_example_can_be_reapplied(name: str, doc: dict[str, Any]) -> None:
    """kubectl apply of the same manifest again is an update with oldSelf == self."""
    changed = copy.deepcopy(doc)
    changed["metadata"]["labels"] = {"team": "sre"}
    changed["status"] = {"observedGeneration": 1}
    assert validate(changed, old=doc) == [], name


@pytest.mark.parametrize(("name", "doc"), TARGETS, ids=[n for n, _ in TARGETS])
def test_example_target_parses_with_herald(name: str, doc: dict[str, Any]) -> None:
    target = parse_target(doc)
    assert (target.namespace, target.name) == ("default", doc["metadata"]["name"]), name
    assert target.spec.type == doc["spec"]["type"]


@pytest.mark.parametrize(("name", "doc"), TARGETS, ids=[n for n, _ in TARGETS])
def test_example_target_secret(name: str, doc: dict[str, Any]) -> None:
    """Each target's Secret is in the same file, with the keys its type reads."""
    spec = doc["spec"]
    secret = SECRETS[name.split(":")[0], spec["secretRef"]["name"]]
    assert secret["apiVersion"] == "v1" and secret["type"] == "Opaque"
    assert secret["metadata"].get("namespace") == doc["metadata"].get("namespace")
    data: Mapping[str, str] = secret["stringData"]
    assert set(data) <= {"signingSecret", "routingKey", "url"}
    if spec["type"] == "webhook":
        assert data["signingSecret"].startswith("whsec_")
        standardwebhooks.Webhook(data["signingSecret"])  # a usable signing secret
    if spec["type"] == "pagerduty":
        assert re.fullmatch(r"[0-9a-z]{32}", data["routingKey"])
    if "url" not in spec and spec["type"] != "pagerduty":
        assert check_url(data["url"]) is None


def leaf_paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from leaf_paths(item, crd_schema.join(path, key))
    yield path


@pytest.mark.parametrize("kind", KINDS)
def test_examples_show_every_spec_field(kind: str) -> None:
    shown = {
        path for _, doc in RESOURCES if doc["kind"] == kind for path in leaf_paths(doc["spec"])
    }
    fields = {
        path
        for path, node in walk(spec_schema(kind))
        if path and "*" not in path and node["type"] != "object"
    }
    assert fields - shown == set()


def test_webhook_example_sets_every_field_but_the_schedule() -> None:
    [doc] = [d for n, d in TARGETS if d["spec"]["type"] == "webhook" and "/" not in n.split(":")[0]]
    assert set(doc["spec"]) == set(spec_schema()["properties"])
    fields = {path for path, node in walk(spec_schema()) if "." in path and "*" not in path}
    assert fields - set(leaf_paths(doc["spec"])) == {"retry.scheduleSeconds"}


# --- the CRD and Herald agree --------------------------------------------------------------

MINIMAL_SPECS: list[dict[str, Any]] = [
    {"type": "pagerduty"},
    {"type": "webhook", "url": "https://hooks.example.com/x"},
    {"type": "slack", "secretRef": {"name": "team-chat"}},
    {
        "type": "webhook",
        "url": "http://receiver.default.svc:8080/hook",
        "timeoutSeconds": None,
        "retry": None,
        "circuitBreaker": None,
        "headers": None,
    },
    {
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "retry": {"scheduleSeconds": [60, 300, 900, 3600, 14400], "maxAttempts": 6},
    },
    {
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "rateLimit": {"requestsPerSecond": 2.5},
    },
    {
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "rateLimit": {"requestsPerSecond": 0.1},
    },
]
DEFAULT_CASES = [doc["spec"] for _, doc in TARGETS] + MINIMAL_SPECS


@pytest.mark.parametrize("spec", DEFAULT_CASES)
def test_crd_defaults_equal_herald_defaults(spec: dict[str, Any]) -> None:
    """What the apiserver stores is what Herald registers, field for field."""
    assert (
        validate(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PublishingTarget",
                "metadata": {"name": "t"},
                "spec": spec,
            }
        )
        == []
    )
    defaulted = apply_defaults(spec_schema(), spec)
    herald = parse_spec(spec).to_config()
    rate = spec.get("rateLimit")
    if rate and "burst" not in rate:
        # No schema default for burst (it depends on requestsPerSecond): Herald's is computed.
        assert herald["rateLimit"].pop("burst") == max(1, math.ceil(rate["requestsPerSecond"]))
    assert defaulted == herald
    # And Herald reads the stored object back unchanged.
    assert parse_spec(defaulted).to_config() == parse_spec(spec).to_config()


def numeric_bounds() -> Iterator[tuple[str, str, float, bool]]:
    """(path, description, value, valid) at and just past every bound of the spec's numbers."""
    for path, node in walk(spec_schema()):
        if node["type"] not in ("integer", "number"):
            continue
        step = 1 if node["type"] == "integer" else 0.5
        low, high = node["minimum"], node["maximum"]
        if node.get("exclusiveMinimum"):
            yield path, "exclusive minimum", low, False
            yield path, "just above the exclusive minimum", low + 0.001, True
        else:
            yield path, "minimum", low, True
            yield path, "below the minimum", low - step, False
        yield path, "maximum", high, True
        yield path, "above the maximum", high + step, False
        if node["type"] == "integer":
            yield path, "fraction", low + 0.5, False


BOUNDS = list(numeric_bounds())


def probe_spec(path: str, value: Any) -> dict[str, Any]:
    """A valid spec (whatever the bound probed) with ``value`` at ``path``."""
    spec: dict[str, Any] = {
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "retry": {"initialBackoffSeconds": 0, "maxBackoffSeconds": 86400},
        "rateLimit": {"requestsPerSecond": 1},
    }
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part.removesuffix("[*]"), {})
    if last.endswith("[*]"):
        node[last.removesuffix("[*]")] = [value]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "what", "value", "valid"), BOUNDS, ids=[f"{p}-{w}" for p, w, _, _ in BOUNDS]
)
def test_crd_bounds_equal_herald_bounds(path: str, what: str, value: float, valid: bool) -> None:
    spec = probe_spec(path, value)
    problems = validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": spec,
        }
    )
    herald_error: str | None = None
    try:
        parse_spec(spec)
    except InvalidTarget as exc:
        herald_error = str(exc)
    if valid:
        assert problems == [] and herald_error is None, (problems, herald_error)
    else:
        assert [p.path for p in problems] == [f"spec.{path}".replace("[*]", "[0]")]
        assert herald_error is not None and f"spec.{path.removesuffix('[*]')}" in herald_error


@pytest.mark.parametrize(("steps", "valid"), [(0, False), (1, True), (100, True), (101, False)])
def test_schedule_length_bounds_agree(steps: int, valid: bool) -> None:
    spec = {
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "retry": {"scheduleSeconds": [1] * steps},
    }
    problems = validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": spec,
        }
    )
    assert (problems == []) is valid
    if valid:
        parse_spec(spec)
    else:
        with pytest.raises(InvalidTarget, match=r"spec\.retry\.scheduleSeconds"):
            parse_spec(spec)


@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        ({"type": "pagerduty"}, True),
        ({"type": "slack", "secretRef": {"name": "s"}}, True),
        ({"type": "webhook", "url": "https://hooks.example.com/x"}, True),
        ({"type": "slack"}, False),
        ({"type": "webhook", "headers": {"X-Url": "https://hooks.example.com/x"}}, False),
    ],
)
def test_url_rule(spec: dict[str, Any], valid: bool) -> None:
    problems = validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": spec,
        }
    )
    assert (problems == []) is valid, problems
    if not valid:
        assert problems[0].message.startswith("url is required unless")


URLS_BOTH_ACCEPT = [
    "https://hooks.example.com/herald",
    "http://receiver.default.svc.cluster.local:8080/hook?team=sre#x",
    "https://hooks.example.com?x=1",
    "http://10.0.0.7:80",
    "http://[fd00::7]:8080/hook",
    "https://hooks.example.com:/x",
]
URLS_BOTH_REJECT = [
    "hooks.example.com/herald",
    "ftp://files.example.com/herald",
    "https://",
    "https:///path",
    "https://:80/x",
    "https://hooks.example.com:abc/x",
    "mailto:sre@example.com",
    "https://user:pw@hooks.example.com/",
    "https://user@hooks.example.com/x",
    "https://hooks.example.com/a\x00b",
    "https://hooks.example.com/a\x7fb",
]
URL_CASES = [(u, True) for u in URLS_BOTH_ACCEPT] + [(u, False) for u in URLS_BOTH_REJECT]


@pytest.mark.parametrize(("url", "valid"), URL_CASES)
def test_url_checks_agree(url: str, valid: bool) -> None:
    spec = {"type": "webhook", "url": url}
    problems = validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": spec,
        }
    )
    assert (problems == []) is valid, problems
    assert all(p.path == "spec.url" for p in problems)
    assert (check_url(url) is None) is valid


def test_url_with_whitespace_is_rejected_by_both() -> None:
    url = "https://hooks example.com/x"
    assert validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": {"type": "webhook", "url": url},
        }
    )
    assert check_url(url) == f"must not contain whitespace: {url!r}"


@pytest.mark.parametrize("header", sorted(RESERVED_HEADERS))
def test_reserved_headers_rejected_in_any_case(header: str) -> None:
    for name in (header, header.upper(), header.title()):
        spec = {"type": "webhook", "url": "https://hooks.example.com/x", "headers": {name: "x"}}
        problems = validate(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PublishingTarget",
                "metadata": {"name": "t"},
                "spec": spec,
            }
        )
        assert [p.path for p in problems] == ["spec.headers"], name
        assert "Herald sets them" in problems[0].message
        with pytest.raises(InvalidTarget, match=f"spec.headers.{re.escape(name)}"):
            parse_spec(spec)


def test_lookalike_headers_are_allowed() -> None:
    spec = {
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "headers": {
            "X-Webhook-Id": "a",
            "Hostname": "b",
            "X-Authorization": "c",
            "Cookies-Ok": "d",
        },
    }
    assert (
        validate(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PublishingTarget",
                "metadata": {"name": "t"},
                "spec": spec,
            }
        )
        == []
    )
    assert parse_spec(spec).headers == spec["headers"]


def test_header_count_is_bounded_by_both() -> None:
    """maxProperties keeps the CEL rules over headers within the apiserver's cost budget;
    parse_spec has the same bound."""
    headers = {f"X-H{i}": "v" for i in range(65)}
    spec = {"type": "webhook", "url": "https://hooks.example.com/x", "headers": headers}
    problems = validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": spec,
        }
    )
    assert [p.path for p in problems] == ["spec.headers"]
    assert "too many properties" in problems[0].message
    with pytest.raises(InvalidTarget, match=r"spec\.headers: must have at most 64 entries, got 65"):
        parse_spec(spec)


# --- DeadLetterReplay rules ----------------------------------------------------------------


def replay(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "DeadLetterReplay",
        "metadata": {"name": "r"},
        "spec": spec,
    }


def test_replay_defaults() -> None:
    assert apply_defaults(spec_schema("DeadLetterReplay"), {}) == {"limit": 1000, "dryRun": False}
    assert validate(replay({})) == []


@pytest.mark.parametrize(
    ("after", "before", "valid"),
    [
        ("2026-11-20T00:00:00Z", "2026-11-20T00:00:01Z", True),
        ("2026-11-20T00:00:00Z", "2026-11-20T00:00:00Z", False),
        ("2026-11-20T00:00:00Z", "2026-11-19T23:59:59Z", False),
        # Compared as instants, not as text: 01:00+02:00 is 23:00Z the day before.
        ("2026-11-20T01:00:00+02:00", "2026-11-19T23:30:00Z", True),
        ("2026-11-19T23:30:00Z", "2026-11-20T01:00:00+02:00", False),
    ],
)
def test_replay_window_compares_instants(after: str, before: str, valid: bool) -> None:
    problems = validate(replay({"failedAfter": after, "failedBefore": before}))
    assert (problems == []) is valid, problems


def test_replay_window_may_be_open_ended() -> None:
    assert validate(replay({"failedAfter": "2026-11-20T00:00:00Z"})) == []
    assert validate(replay({"failedBefore": "2026-11-20T00:00:00.5+01:00"})) == []


def test_replay_spec_is_immutable_but_status_is_not() -> None:
    old = replay({"target": "oncall-hook", "jobIds": ["0b8f3c52-7d4e-4a8f-9a51-2f0c6e1d9b37"]})
    new = copy.deepcopy(old)
    new["status"] = {"phase": "Succeeded", "matched": 1, "replayed": 1, "skipped": 0}
    assert validate(new, old=old) == []
    # Writing a default out explicitly is no change: the stored object has it already.
    new["spec"]["limit"] = 1000
    assert validate(new, old=old) == []
    changes: list[dict[str, Any]] = [{"dryRun": True}, {"jobIds": []}, {"target": "other"}]
    for change in changes:
        changed = copy.deepcopy(old)
        changed["spec"].update(change)
        [problem] = validate(changed, old=old)
        assert problem.message.startswith("a DeadLetterReplay is one-shot"), change


# --- invalid manifests ---------------------------------------------------------------------

INVALID = sorted(INVALID_DIR.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect-(crd|herald): (.+)$", re.MULTILINE)


def expectations(path: Path) -> tuple[list[str], str | None]:
    """The ``# expect-crd:`` lines of a file and its ``# expect-herald:`` line."""
    crd: list[str] = []
    herald: str | None = None
    for which, text in _EXPECT.findall(path.read_text("utf-8")):
        if which == "crd":
            crd.append(text.strip())
        else:
            herald = text.strip()
    return crd, herald


def rejections(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    """The manifest of ``path`` (the last document; an earlier one is the stored object of an
    update) and why it is rejected."""
    docs = load_documents(path)
    assert 1 <= len(docs) <= 2, path
    old = docs[0] if len(docs) == 2 else None
    if old is not None:
        assert validate(old) == [], f"{path.name}: the stored object must be valid"
    return docs[-1], validate(docs[-1], old=old)


def test_invalid_corpus_covers_the_brief() -> None:
    names = {path.stem for path in INVALID}
    assert {
        "pt-type-not-in-enum",
        "pt-missing-type",
        "pt-max-backoff-below-initial",
        "pt-negative-timeout",
        "pt-rate-limit-without-rps",
        "pt-reserved-header",
        "pt-bad-secret-name",
        "pt-url-without-scheme",
        "dlr-window-reversed",
        "dlr-bad-error-class",
        "dlr-job-ids-not-uuid",
        "dlr-spec-change",
    } <= names


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_is_rejected(path: Path) -> None:
    """Rejected for exactly the reasons its comments state, each naming field or rule."""
    expected, _ = expectations(path)
    assert expected, f"{path.name}: no '# expect-crd:' line"
    _, problems = rejections(path)
    messages = [str(p) for p in problems]
    assert len(messages) == len(expected), messages
    for text in expected:
        assert any(text in message for message in messages), (text, messages)


TARGET_INVALID = [p for p in INVALID if p.name.startswith("pt-")]


@pytest.mark.parametrize("path", TARGET_INVALID, ids=[p.stem for p in TARGET_INVALID])
def test_invalid_target_is_rejected_by_herald(path: Path) -> None:
    """parse_target names the same field, except where the CRD alone guards ("accepted")."""
    _, herald = expectations(path)
    assert herald, f"{path.name}: no '# expect-herald:' line"
    [doc] = load_documents(path)
    if herald.startswith("accepted"):
        parse_target(doc)  # a known difference: only the CRD rejects this
        return
    with pytest.raises(InvalidTarget) as caught:
        parse_target(doc)
    assert herald in str(caught.value)


REPLAY_INVALID = [p for p in INVALID if p.name.startswith("dlr-")]


@pytest.mark.parametrize("path", REPLAY_INVALID, ids=[p.stem for p in REPLAY_INVALID])
def test_invalid_replay_is_rejected_by_herald(path: Path) -> None:
    """The operator's parser of DeadLetterReplay specs names the same field; a change of
    spec is the API server's to refuse (the operator sees one spec)."""
    _, herald = expectations(path)
    assert herald, f"{path.name}: no '# expect-herald:' line"
    spec = load_documents(path)[-1]["spec"]
    if herald.startswith("accepted"):
        parse_replay_spec(spec)
        return
    with pytest.raises(SpecError) as caught:
        parse_replay_spec(spec)
    assert str(caught.value) == herald


HOSTILE_SPECS: list[Any] = [
    [],
    "webhook",
    {"type": ["webhook"]},
    {"type": "webhook", "url": 5, "headers": [], "retry": "fast", "paused": "yes"},
    {"type": "webhook", "url": "https://h.example.com/", "timeoutSeconds": "10"},
    {"type": "webhook", "url": "https://h.example.com/", "timeoutSeconds": True},
    {"type": "webhook", "url": "https://h.example.com/", "timeoutSeconds": math.inf},
    {"type": "webhook", "url": "https://h.example.com/", "retry": {"maxAttempts": 2.5}},
    {
        "type": "webhook",
        "url": "https://h.example.com/",
        "rateLimit": {"requestsPerSecond": math.nan},
    },
    {"type": "webhook", "url": "https://h.example.com/" + "a" * 3000},
    {"type": "webhook", "url": "https://h.example.com/", "headers": {"X-A": 5, "X-B": None}},
    {"type": "webhook", "url": "https://h.example.com/", "retry": {"scheduleSeconds": ["1"]}},
    {"type": "webhook", "secretRef": "oncall-hook"},
    {"type": "webhook", "secretRef": {"name": "s", "key": "url"}},
]


@pytest.mark.parametrize("spec", HOSTILE_SPECS, ids=[str(i) for i in range(len(HOSTILE_SPECS))])
def test_errors_are_one_line_per_problem_in_herald_words(spec: Any) -> None:
    """Every problem is ``spec.<path>: <what to do>``; never pydantic's own text or links."""
    with pytest.raises(InvalidTarget) as caught:
        parse_spec(spec)
    message = str(caught.value)
    for problem in message.split("; "):
        assert re.match(r"spec(\.[^:]+|\[\d+\])*: [a-z]", problem), problem
    for pydantic_text in ("Input should", "pydantic", "[type=", "input_value", "Value error"):
        assert pydantic_text not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "webhook", "url": "https://u:PASSWORD@hooks.example.com/x"},
        {"type": "webhook", "url": "https://u:PASSWORD@hooks.example.com/x", "paused": 1},
        {"type": "webhook", "url": "ftp://u:PASSWORD@hooks.example.com/x"},
        {"type": "webhook", "url": "https://u:PASSWORD@hooks.example.com/" + "a" * 3000},
        {"type": "webhook", "url": "https://hooks.example.com/x", "headers": {"X-A": "PASSWORD\n"}},
        {"type": "webhook", "url": "https://hooks.example.com/x", "headers": {"X-A": " PASSWORD"}},
        {"type": "webhook", "url": "https://hooks.example.com/x", "headers": {"X-A": ["PASSWORD"]}},
    ],
)
def test_errors_never_repeat_a_secret(spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidTarget) as caught:
        parse_spec(spec)
    assert "PASSWORD" not in str(caught.value)


# --- the CRDs are generated from the models -------------------------------------------------


def test_crds_are_the_generators_output() -> None:
    stale = crd_gen.stale()
    assert not stale, (
        f"{', '.join(str(p.relative_to(ROOT)) for p in stale)} differ from the spec models "
        f"(herald_model/target_spec.py, herald_model/replay_spec.py): run {crd_gen.COMMAND}"
    )


def test_a_model_change_changes_the_crd() -> None:
    """A field added to a model appears in the generated CRD, with its bounds, and only
    the spec part of the file changes."""

    wider = pydantic.create_model(
        "Wider",
        __base__=ReplaySpec,
        __doc__=ReplaySpec.__doc__,
        batch_size=(
            int,
            pydantic.Field(
                default=100, alias="batchSize", ge=1, le=500, description="Dead letters per batch."
            ),
        ),
    )
    source = (CRD_DIR / "deadletterreplays.yaml").read_text("utf-8")
    assert crd_gen.render(source, ReplaySpec) == source
    changed = yaml.safe_load(crd_gen.render(source, wider))
    spec = changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["batchSize"] == {
        "type": "integer",
        "description": "Dead letters per batch.",
        "default": 100,
        "minimum": 1,
        "maximum": 500,
    }
    del spec["properties"]["batchSize"]
    assert changed == yaml.safe_load(source)
    assert crd_gen.main(["--check"]) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_generated_spec_schema_is_structural(kind: str) -> None:
    """What the API server refuses in a structural schema never comes out of a model."""
    for path, node in walk(spec_schema(kind)):
        assert not {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title"} & set(node), path
        assert node.get("exclusiveMinimum", True) is True, path  # OpenAPI 3.0: a flag
        assert node.get("default", 0) is not None, path


def test_every_cel_rule_compiles() -> None:
    for kind, path, spec in crd_schema.all_rules():
        crd_schema.compile_rule(spec["rule"])
        assert spec["message"].strip(), (kind, path)


def test_every_cel_rule_is_exercised_by_an_invalid_manifest() -> None:
    """A rule added to a CRD needs an invalid manifest that breaks it."""
    broken = {problem.rule for path in INVALID for problem in rejections(path)[1]}
    rules = {spec["rule"] for _, _, spec in crd_schema.all_rules()}
    assert len(rules) == 8
    assert rules - broken == set()


def test_chart_crds_are_copies() -> None:
    chart = ROOT / "deploy" / "helm" / "herald" / "crds"
    if not any(chart.glob("*.yaml")):
        pytest.skip("the Helm chart has no crds/ yet")
    for path in CRD_DIR.glob("*.yaml"):
        assert (chart / path.name).read_bytes() == path.read_bytes(), path.name


HEADER_VALUES = [
    ("sre", True),
    ("", True),
    ("a b\tc", True),
    ('Bearer-ish; q=0.5, x="y"', True),
    ("a\x00b", False),
    ("a\x01b", False),
    ("a\x7fb", False),
    ("sre\nX-Admin: yes", False),
    ("a\rb", False),
    (" sre", False),
    ("sre\t", False),
    ("\u00e9quipe", False),
]


@pytest.mark.parametrize(("value", "valid"), HEADER_VALUES)
def test_header_values_are_rfc_9110_field_values_for_both(value: str, valid: bool) -> None:
    """The CRD's pattern and parse_spec accept the same header values: visible ASCII with
    spaces and tabs inside; no control character (NUL, line breaks, DEL), nothing leading
    or trailing, no obs-text."""
    spec = {"type": "webhook", "url": "https://hooks.example.com/x", "headers": {"X-A": value}}
    problems = validate(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": "t"},
            "spec": spec,
        }
    )
    assert (problems == []) is valid, problems
    if valid:
        assert parse_spec(spec).headers == {"X-A": value}
    else:
        with pytest.raises(InvalidTarget, match=r"^spec\.headers\.X-A: must "):
            parse_spec(spec)


@pytest.mark.parametrize("name", ["X-A\n", "X-A\x00", "X A", ""])
def test_header_names_are_tokens_to_their_last_character(name: str) -> None:
    with pytest.raises(InvalidTarget, match="is not a valid HTTP header name"):
        parse_spec({"type": "webhook", "url": "https://h.example.com/", "headers": {name: "v"}})


@pytest.mark.parametrize("field", ["name", "namespace"])
def test_object_names_with_a_final_newline_are_refused(field: str) -> None:
    """``$`` matches before a final newline: names are checked with fullmatch."""
    manifest = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": "hook", "namespace": "default", field: "hook\n"},
        "spec": {"type": "webhook", "url": "https://h.example.com/", "secretRef": {"name": "s"}},
    }
    with pytest.raises(InvalidTarget, match=rf"metadata\.{field}"):
        parse_target(manifest)
    manifest["metadata"][field] = "hook"
    manifest["spec"]["secretRef"] = {"name": "s\n"}
    with pytest.raises(InvalidTarget, match=r"spec\.secretRef\.name"):
        parse_target(manifest)


def test_url_credentials_are_refused_and_never_repeated() -> None:
    for url in (
        "http://u:PASSWORD@hooks.example.com/x",
        "https://PASSWORD@hooks.example.com",
        "http://u:PASSWORD@hooks example.com/x",
    ):
        why = check_url(url)
        assert why is not None and "PASSWORD" not in why, why
        assert "Secret under key url" in why
        # A Secret's url key may hold credentials (it is a secret).
    assert check_url("http://u:PASSWORD@hooks.example.com/x", allow_userinfo=True) is None
    shown = check_url("ftp://u:PASSWORD@hooks.example.com/x", allow_userinfo=True)
    assert shown is not None and "PASSWORD" not in shown and "***@hooks.example.com" in shown
    assert check_url("https://hooks.example.com/a@b") is None, "an @ in the path is no userinfo"
