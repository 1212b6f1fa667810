"""The PublishingTarget spec: parsed, checked and completed with defaults.

The defaults here are the CRD's defaults (``crds/publishingtargets.yaml``; a test keeps
them equal), so a target registered from a local manifest behaves exactly like one the
operator registered from the cluster. Every problem is reported with the field's path.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from herald_queue.errors import InvalidTarget

API_VERSION = "herald.dev/v1alpha1"
KIND = "PublishingTarget"
TYPES = ("webhook", "slack", "pagerduty")

# DNS-1123 subdomain, as Kubernetes requires of object names. Both are used with
# fullmatch: "$" would also match before a final newline.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# An HTTP token (RFC 9110 section 5.1).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# An HTTP field value (RFC 9110 section 5.5): visible ASCII, with spaces and tabs inside
# (none leading or trailing); no control character, so no NUL and no line break. Non-ASCII
# (obs-text) is refused too: receivers decode it differently.
_HEADER_VALUE = re.compile(r"([\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?)?")
# Characters no URL, name or header may hold: C0 controls (NUL among them), DEL, C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_HEADERS = 64
# Headers Herald sets itself; a target may not override them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    }
)
# Headers that carry credentials: never inline in a PublishingTarget (it is readable by
# anyone who can read the object, and is kept with every dead letter); a webhook target
# takes an Authorization header from its Secret (key authorization).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 2.0
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 1.0
    # An explicit schedule (seconds before attempt 2, 3, ...) replaces the exponential one;
    # its last step repeats. Seed 000's schedule is (60, 300, 900, 3600, 14400).
    schedule: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class CircuitBreakerPolicy:
    failure_threshold: int = 5
    open_seconds: float = 30.0
    half_open_probes: int = 1


@dataclasses.dataclass(frozen=True)
class RateLimit:
    requests_per_second: float
    burst: int


@dataclasses.dataclass(frozen=True)
class CapacityPolicy:
    """spec.capacity: how many jobs may wait for the target (queued or retrying). Warnings
    from 80 % (herald_queue.capacity); with ``hard_limit`` the API refuses jobs beyond it."""

    jobs: int
    hard_limit: bool = False


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    type: str
    url: str | None = None
    secret_name: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()
    rate_limit: RateLimit | None = None
    capacity: CapacityPolicy | None = None
    paused: bool = False

    def to_config(self) -> dict[str, Any]:
        """The spec as stored in the registry: camelCase, defaults filled in."""
        config: dict[str, Any] = {
            "type": self.type,
            "headers": dict(self.headers),
            "timeoutSeconds": self.timeout,
            "retry": {
                "maxAttempts": self.retry.max_attempts,
                "initialBackoffSeconds": self.retry.initial_backoff,
                "maxBackoffSeconds": self.retry.max_backoff,
                "multiplier": self.retry.multiplier,
                "jitterSeconds": self.retry.jitter,
            },
            "circuitBreaker": {
                "failureThreshold": self.circuit_breaker.failure_threshold,
                "openSeconds": self.circuit_breaker.open_seconds,
                "halfOpenProbes": self.circuit_breaker.half_open_probes,
            },
            "paused": self.paused,
        }
        if self.url is not None:
            config["url"] = self.url
        if self.secret_name is not None:
            config["secretRef"] = {"name": self.secret_name}
        if self.retry.schedule:
            config["retry"]["scheduleSeconds"] = list(self.retry.schedule)
        if self.rate_limit is not None:
            config["rateLimit"] = {
                "requestsPerSecond": self.rate_limit.requests_per_second,
                "burst": self.rate_limit.burst,
            }
        if self.capacity is not None:
            config["capacity"] = {
                "jobs": self.capacity.jobs,
                "hardLimit": self.capacity.hard_limit,
            }
        return config


@dataclasses.dataclass(frozen=True)
class PublishingTarget:
    namespace: str
    name: str
    spec: TargetSpec
    generation: int = 0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def is_object_name(value: object) -> bool:
    """Whether ``value`` is a Kubernetes object name (a DNS-1123 subdomain)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


class _Problems:
    """Collects every problem of a spec so one error names them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def _number(
    problems: _Problems,
    data: Mapping[str, Any],
    key: str,
    path: str,
    default: float,
    *,
    minimum: float,
    maximum: float,
    integer: bool = False,
    exclusive_min: bool = False,
) -> float:
    if key not in data or data[key] is None:
        return default
    value = data[key]
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not float(value).is_integer())
        or not math.isfinite(value)
    ):
        problems.add(f"{path}.{key}", f"must be {kind}, got {value!r}")
        return default
    low_ok = value > minimum if exclusive_min else value >= minimum
    if not low_ok or value > maximum:
        bound = f"greater than {minimum:g}" if exclusive_min else f"at least {minimum:g}"
        problems.add(f"{path}.{key}", f"must be {bound} and at most {maximum:g}, got {value!r}")
        return default
    return int(value) if integer else float(value)


def _mapping(
    problems: _Problems, data: Mapping[str, Any], key: str, path: str
) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(f"{path}.{key}", f"must be an object, got {type(value).__name__}")
        return {}
    return value


USERINFO_PROBLEM = (
    "must not hold credentials (user:password@ before the host): the spec is readable by "
    "anyone who can read the object and is copied into every dead letter; put the whole URL "
    "in the target's Secret under key url (spec.secretRef) instead"
)


def has_userinfo(url: str) -> bool:
    """Whether ``url`` has a user:password@ part before its host."""
    _, sep, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0] if sep else ""
    return "@" in authority


def _shown(url: str) -> str:
    """``url`` for a message: without its userinfo, if any (it is a credential)."""
    if not has_userinfo(url):
        return repr(url)
    scheme, _, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return repr(f"{scheme}://***@{rest[authority.rindex('@') + 1 :]}")


def check_url(url: str, *, allow_userinfo: bool = False) -> str | None:
    """Why ``url`` is not a usable http(s) endpoint, or None when it is. A URL with
    credentials (userinfo) is refused unless ``allow_userinfo`` (a Secret's url key may
    hold one: it is a secret); messages never repeat the credentials."""
    if _CONTROL.search(url):
        return "must not contain control characters (such as NUL or a line break)"
    if not allow_userinfo and has_userinfo(url):
        return USERINFO_PROBLEM
    shown = _shown(url)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {shown}"
    if not parts.hostname:
        return f"has no host: {shown}"
    if any(c.isspace() for c in url):
        return f"must not contain whitespace: {shown}"
    return None


def header_value_problem(value: object) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None when it can."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if _HEADER_VALUE.fullmatch(value):
        return None
    if _CONTROL.search(value) and not set(_CONTROL.findall(value)) <= {"\t"}:
        return (
            "must be a single-line header value without control characters (RFC 9110 "
            "field-value: no NUL, line break or other control character; tabs only inside)"
        )
    if value != value.strip(" \t"):
        return "must not start or end with a space or tab (RFC 9110 field-value)"
    return "must be visible ASCII characters, with spaces and tabs inside (RFC 9110 field-value)"


def parse_spec(spec: Mapping[str, Any]) -> TargetSpec:
    """Check a PublishingTarget spec and complete it with defaults."""
    problems = _Problems()
    if not isinstance(spec, Mapping):
        raise InvalidTarget(f"spec: must be an object, got {type(spec).__name__}")
    known = {
        "type",
        "url",
        "secretRef",
        "headers",
        "timeoutSeconds",
        "retry",
        "circuitBreaker",
        "rateLimit",
        "capacity",
        "paused",
    }
    for key in spec:
        if key not in known:
            problems.add(f"spec.{key}", f"unknown field (known: {', '.join(sorted(known))})")

    kind = spec.get("type")
    if kind not in TYPES:
        problems.add("spec.type", f"must be one of {', '.join(TYPES)}, got {kind!r}")

    url = spec.get("url")
    if url is not None:
        if not isinstance(url, str):
            problems.add("spec.url", f"must be a string, got {type(url).__name__}")
            url = None
        elif (why := check_url(url)) is not None:
            problems.add("spec.url", why)

    secret_name = None
    secret_ref = _mapping(problems, spec, "secretRef", "spec")
    if "secretRef" in spec and spec["secretRef"] is not None:
        secret_name = secret_ref.get("name")
        if not isinstance(secret_name, str) or not _NAME.fullmatch(secret_name):
            problems.add("spec.secretRef.name", f"must be a Secret name, got {secret_name!r}")
            secret_name = None

    headers: dict[str, str] = {}
    raw_headers = _mapping(problems, spec, "headers", "spec")
    if len(raw_headers) > MAX_HEADERS:
        problems.add("spec.headers", f"at most {MAX_HEADERS} headers, got {len(raw_headers)}")
    for name, value in raw_headers.items():
        path = f"spec.headers.{name}"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            if isinstance(name, str) and _CONTROL.search(name):
                path = f"spec.headers.{name!r}"
            problems.add(path, "is not a valid HTTP header name (RFC 9110 token)")
        elif name.lower() in RESERVED_HEADERS:
            problems.add(path, "is set by Herald and cannot be overridden")
        elif name.lower() in CREDENTIAL_HEADERS:
            problems.add(
                path,
                "carries a credential, which never goes inline: put it in the target's "
                "Secret (secretRef; a webhook target sends the Secret's key authorization "
                "as its Authorization header)",
            )
        elif (why := header_value_problem(value)) is not None:
            problems.add(path, why)
        else:
            headers[name] = value

    timeout = _number(
        problems, spec, "timeoutSeconds", "spec", 10.0, minimum=0, maximum=300, exclusive_min=True
    )

    r = _mapping(problems, spec, "retry", "spec")
    retry = RetryPolicy(
        max_attempts=int(
            _number(
                problems, r, "maxAttempts", "spec.retry", 5, minimum=1, maximum=100, integer=True
            )
        ),
        initial_backoff=_number(
            problems, r, "initialBackoffSeconds", "spec.retry", 2.0, minimum=0, maximum=86_400
        ),
        max_backoff=_number(
            problems, r, "maxBackoffSeconds", "spec.retry", 30.0, minimum=0, maximum=86_400
        ),
        multiplier=_number(problems, r, "multiplier", "spec.retry", 2.0, minimum=1, maximum=10),
        jitter=_number(problems, r, "jitterSeconds", "spec.retry", 1.0, minimum=0, maximum=3_600),
        schedule=_schedule(problems, r.get("scheduleSeconds")),
    )
    if retry.max_backoff < retry.initial_backoff:
        problems.add(
            "spec.retry.maxBackoffSeconds",
            f"must be at least initialBackoffSeconds ({retry.initial_backoff:g}), "
            f"got {retry.max_backoff:g}",
        )

    c = _mapping(problems, spec, "circuitBreaker", "spec")
    breaker = CircuitBreakerPolicy(
        failure_threshold=int(
            _number(
                problems,
                c,
                "failureThreshold",
                "spec.circuitBreaker",
                5,
                minimum=1,
                maximum=1_000,
                integer=True,
            )
        ),
        open_seconds=_number(
            problems,
            c,
            "openSeconds",
            "spec.circuitBreaker",
            30.0,
            minimum=0,
            maximum=86_400,
            exclusive_min=True,
        ),
        half_open_probes=int(
            _number(
                problems,
                c,
                "halfOpenProbes",
                "spec.circuitBreaker",
                1,
                minimum=1,
                maximum=100,
                integer=True,
            )
        ),
    )

    rate_limit = None
    rl = _mapping(problems, spec, "rateLimit", "spec")
    if "rateLimit" in spec and spec["rateLimit"] is not None:
        if "requestsPerSecond" not in rl:
            problems.add("spec.rateLimit.requestsPerSecond", "is required when rateLimit is set")
        else:
            rps = _number(
                problems,
                rl,
                "requestsPerSecond",
                "spec.rateLimit",
                1.0,
                minimum=0,
                maximum=100_000,
                exclusive_min=True,
            )
            burst = int(
                _number(
                    problems,
                    rl,
                    "burst",
                    "spec.rateLimit",
                    max(1, math.ceil(rps)),
                    minimum=1,
                    maximum=1_000_000,
                    integer=True,
                )
            )
            rate_limit = RateLimit(requests_per_second=rps, burst=burst)

    capacity = _capacity(problems, spec)

    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        problems.add("spec.paused", f"must be true or false, got {paused!r}")
        paused = False

    if kind in ("webhook", "slack") and url is None and secret_name is None:
        problems.add(
            "spec.url",
            "is required unless the Secret named by secretRef holds it (key url) or type is "
            "pagerduty",
        )

    if problems.items:
        raise InvalidTarget("; ".join(problems.items))
    assert isinstance(kind, str)
    return TargetSpec(
        type=kind,
        url=url,
        secret_name=secret_name,
        headers=headers,
        timeout=timeout,
        retry=retry,
        circuit_breaker=breaker,
        rate_limit=rate_limit,
        capacity=capacity,
        paused=paused,
    )


MAX_CAPACITY = 1_000_000_000


def _capacity(problems: _Problems, spec: Mapping[str, Any]) -> CapacityPolicy | None:
    """spec.capacity; absent (the default): no capacity, never a warning, never a refusal."""
    raw = _mapping(problems, spec, "capacity", "spec")
    if spec.get("capacity") is None:
        return None
    for key in sorted(set(raw) - {"jobs", "hardLimit"}):
        problems.add(f"spec.capacity.{key}", "unknown field (known: hardLimit, jobs)")
    if "jobs" not in raw:
        problems.add("spec.capacity.jobs", "is required when capacity is set")
        return None
    jobs = int(
        _number(
            problems, raw, "jobs", "spec.capacity", 1, minimum=1, maximum=MAX_CAPACITY, integer=True
        )
    )
    hard_limit = raw.get("hardLimit", False)
    if not isinstance(hard_limit, bool):
        problems.add("spec.capacity.hardLimit", f"must be true or false, got {hard_limit!r}")
        hard_limit = False
    return CapacityPolicy(jobs=jobs, hard_limit=hard_limit)


def _schedule(problems: _Problems, value: Any) -> tuple[float, ...]:
    if value is None:
        return ()
    path = "spec.retry.scheduleSeconds"
    if not isinstance(value, list) or not value or len(value) > 100:
        problems.add(path, "must be a list of 1 to 100 delays in seconds")
        return ()
    steps = []
    for i, step in enumerate(value):
        if isinstance(step, bool) or not isinstance(step, int | float) or not 0 <= step <= 86_400:
            problems.add(
                f"{path}[{i}]", f"must be a number of seconds from 0 to 86400, got {step!r}"
            )
            return ()
        steps.append(float(step))
    return tuple(steps)


def parse_target(
    manifest: Mapping[str, Any], *, default_namespace: str = "default"
) -> PublishingTarget:
    """A PublishingTarget from a manifest (as ``kubectl apply`` takes it)."""
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise InvalidTarget(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{manifest.get('apiVersion')!r} {manifest.get('kind')!r}"
        )
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name")
    namespace = metadata.get("namespace") or default_namespace
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidTarget(f"metadata.name: must be a Kubernetes object name, got {name!r}")
    if not isinstance(namespace, str) or not _NAME.fullmatch(namespace):
        raise InvalidTarget(f"metadata.namespace: must be a namespace name, got {namespace!r}")
    try:
        spec = parse_spec(manifest.get("spec") or {})
    except InvalidTarget as exc:
        raise InvalidTarget(f"PublishingTarget {namespace}/{name}: {exc}") from None
    generation = metadata.get("generation")
    return PublishingTarget(
        namespace=namespace,
        name=name,
        spec=spec,
        generation=generation if isinstance(generation, int) else 0,
    )
