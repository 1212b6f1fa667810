"""The PublishingTarget spec: one pydantic model, from which come the parser (``herald targets
apply``, the operator, the worker's registry), its error messages and the CRD's schema
(``python -m herald_model.crd_gen`` writes ``crds/publishingtargets.yaml``; see there how to
add a field). Every problem is reported with the field's path.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from herald_core.errors import InvalidTarget
from herald_model import events
from herald_model.spec_base import (
    SpecError,
    SpecModel,
    check,
    is_finite_number,
    is_object_name,
    no_default,
    object_name,
    problem,
    rules,
)

API_VERSION = "herald.dev/v1alpha1"
KIND = "PublishingTarget"
TYPES = ("webhook", "slack", "pagerduty")

# An HTTP token (RFC 9110 section 5.1).
HEADER_NAME_PATTERN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_HEADER_NAME = re.compile(HEADER_NAME_PATTERN)
# An HTTP field value (RFC 9110 section 5.5): visible ASCII, with spaces and tabs inside
# (none leading or trailing); no control character, so no NUL and no line break. Non-ASCII
# (obs-text) is refused too: receivers decode it differently.
HEADER_VALUE_PATTERN = r"([\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?)?"
_HEADER_VALUE = re.compile(HEADER_VALUE_PATTERN)
# Characters no URL, name or header may hold: C0 controls (NUL among them), DEL, C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The CRD's check of spec.url (Herald's is check_url): http(s), a host, no whitespace and no
# control character (NUL, line breaks, DEL, C1).
URL_PATTERN = (
    r"^https?://([^\s\x00-\x1f\x7f-\x9f/?#@]+@)?([^\s\x00-\x1f\x7f-\x9f/?#@:\[\]]+|"
    r"\[[0-9A-Fa-f:.]+\])(:[0-9]*)?([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
)
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


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise problem("is not a valid HTTP header name (RFC 9110 token)")
    if name.lower() in RESERVED_HEADERS:
        raise problem("is set by Herald and cannot be overridden")
    if name.lower() in CREDENTIAL_HEADERS:
        raise problem(
            "carries a credential, which never goes inline: put it in the target's Secret "
            "(secretRef; a webhook target sends the Secret's key authorization as its "
            "Authorization header)"
        )
    return name


def _header_value(value: object) -> object:
    if isinstance(value, str) and (why := header_value_problem(value)) is not None:
        raise problem(why)
    return value


def _url(value: object) -> object:
    if isinstance(value, str) and (why := check_url(value)) is not None:
        raise problem(why)
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[
    str,
    Field(
        pattern=f"^{HEADER_VALUE_PATTERN}$",
        description=(
            "Header value (RFC 9110 field-value): visible ASCII characters, with spaces and "
            "tabs inside but not leading or trailing; no control character (NUL, line breaks)."
        ),
    ),
    BeforeValidator(_header_value),
]
Seconds = Annotated[float, Field(ge=0, le=86_400)]


def _quoted(names: frozenset[str]) -> str:
    return ", ".join(f"'{n}'" for n in sorted(names))


class SecretRef(SpecModel):
    """The Secret, in the target's namespace, holding its credentials. Keys read:
    `signingSecret` (webhook: Standard Webhooks secret, "whsec_" followed by base64; signs
    every request), `routingKey` (pagerduty: the integration's routing key, required for
    pagerduty), `url` (optional, any type: overrides spec.url)."""

    name: object_name("a Secret") = Field(  # type: ignore[valid-type]
        description="Name of the Secret (a DNS-1123 subdomain)."
    )


class RetryPolicy(SpecModel):
    """How failed deliveries are retried. Transient and unknown failures are retried with
    exponential backoff and jitter (initialBackoffSeconds, multiplied by multiplier each
    attempt, capped at maxBackoffSeconds), or on scheduleSeconds when given; a Retry-After
    answer is honoured. Permanent failures go to the dead-letter queue at once."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": rules(
            (
                "self.maxBackoffSeconds >= self.initialBackoffSeconds",
                "retry.maxBackoffSeconds must be at least retry.initialBackoffSeconds",
            )
        )
    }

    max_attempts: int = Field(
        default=5,
        alias="maxAttempts",
        ge=1,
        le=100,
        json_schema_extra={"format": "int32"},
        description=(
            "Delivery attempts in all, the first included, before the job goes to the "
            "dead-letter queue."
        ),
    )
    initial_backoff: Seconds = Field(
        default=2.0,
        alias="initialBackoffSeconds",
        description="Delay before the second attempt, in seconds.",
    )
    max_backoff: Seconds = Field(
        default=30.0,
        alias="maxBackoffSeconds",
        description=(
            "Upper bound of the exponential delay, in seconds; at least initialBackoffSeconds."
        ),
    )
    multiplier: float = Field(
        default=2.0, ge=1, le=10, description="Factor applied to the delay after each attempt."
    )
    jitter: float = Field(
        default=1.0,
        alias="jitterSeconds",
        ge=0,
        le=3_600,
        description=(
            "Random delay, from 0 to this many seconds, added to each backoff so that "
            "retries do not arrive in lockstep."
        ),
    )
    # Seed 000's schedule is (60, 300, 900, 3600, 14400).
    schedule: (
        tuple[
            Annotated[Seconds, Field(description="Delay before the next attempt, in seconds.")], ...
        ]
        | None
    ) = Field(
        default=None,
        alias="scheduleSeconds",
        strict=False,  # a list in the manifest, a tuple here
        min_length=1,
        max_length=100,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description=(
            "Explicit delays, in seconds, before attempt 2, 3, ...; when given, it replaces "
            "the exponential schedule and its last step repeats (e.g. [60, 300, 900, 3600, "
            "14400]). Jitter still applies."
        ),
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        if self.max_backoff < self.initial_backoff:
            raise problem(
                f"must be at least initialBackoffSeconds ({self.initial_backoff:g}), got "
                f"{self.max_backoff:g}",
                field="maxBackoffSeconds",
            )
        return self


class CircuitBreakerPolicy(SpecModel):
    """Stops deliveries to an unwell receiver. After failureThreshold consecutive transient
    failures the circuit opens for openSeconds: jobs wait in the queue without spending
    attempts. Then up to halfOpenProbes deliveries test the receiver; a success closes the
    circuit, a failure opens it again. The state is shared by every worker replica."""

    failure_threshold: int = Field(
        default=5,
        alias="failureThreshold",
        ge=1,
        le=1_000,
        json_schema_extra={"format": "int32"},
        description="Consecutive transient failures that open the circuit.",
    )
    open_seconds: float = Field(
        default=30.0,
        alias="openSeconds",
        gt=0,
        le=86_400,
        description="How long the circuit stays open before probing, in seconds.",
    )
    half_open_probes: int = Field(
        default=1,
        alias="halfOpenProbes",
        ge=1,
        le=100,
        json_schema_extra={"format": "int32"},
        description="Deliveries allowed at once while the circuit is half-open.",
    )


def _burst_schema(schema: dict[str, Any]) -> None:
    no_default(schema)
    schema["format"] = "int32"


class RateLimit(SpecModel):
    """Caps the delivery rate to this target across all worker replicas (a token bucket).
    Absent: no limit."""

    requests_per_second: float = Field(
        alias="requestsPerSecond",
        gt=0,
        le=100_000,
        description="Sustained deliveries per second.",
    )
    # Its default depends on requestsPerSecond, so the CRD has none (see _default_burst).
    burst: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        json_schema_extra=_burst_schema,
        description=(
            "Deliveries allowed at once above the sustained rate (bucket size). Default: "
            "requestsPerSecond rounded up."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_burst(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("burst") is None:
            rps = data.get("requestsPerSecond")
            if is_finite_number(rps) and rps > 0:
                return {**data, "burst": max(1, math.ceil(rps))}
        return data


MAX_CAPACITY = 1_000_000_000


class CapacityPolicy(SpecModel):
    """How many jobs may wait for this target (queued or retrying: status.depth.total). From
    80 % and at 100 % Herald warns (metrics, a log line per crossing, the CapacityPressure
    condition); jobs are still accepted unless hardLimit is true. Absent: no capacity."""

    jobs: int = Field(
        ge=1,
        le=MAX_CAPACITY,
        json_schema_extra={"format": "int32"},
        description="Waiting jobs the target is sized for.",
    )
    hard_limit: bool = Field(
        default=False,
        alias="hardLimit",
        description=(
            "Refuse jobs beyond the capacity: the HTTP API answers 429 with Retry-After (the "
            "Alertmanager receiver 503), so producers back off. Default false: warn only, "
            "never refuse."
        ),
    )


def _event_pattern(value: object) -> object:
    if isinstance(value, str) and (why := events.pattern_problem(value)) is not None:
        raise problem(why)
    return value


def _event_filter(value: object) -> object:
    if isinstance(value, str):
        try:
            events.compile_filter(value)
        except events.FilterError as exc:
            raise problem(str(exc)) from None
    return value


EventPattern = Annotated[
    str,
    Field(
        max_length=events.EVENT_TYPE_MAX,
        pattern=events.EVENT_PATTERN_PATTERN,
        description="An event type (incident.opened), '*' (every type), or a prefix followed "
        "by '.*' (incident.* matches incident.opened and incident.sla.breached).",
    ),
    BeforeValidator(_event_pattern),
]


class Subscriptions(SpecModel):
    """The events this target receives from POST /v1/events (and the Alertmanager fan-out
    route): each event whose type matches one of eventTypes, and which passes filter when
    one is given, becomes one job for this target. Absent: the target receives only jobs
    addressed to it by name."""

    event_types: tuple[EventPattern, ...] = Field(
        alias="eventTypes",
        strict=False,  # a list in the manifest, a tuple here
        min_length=1,
        max_length=events.MAX_EVENT_TYPES,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Event types to receive: exact types, '*', or prefixes followed by '.*'.",
    )
    filter: (
        Annotated[str, Field(max_length=events.FILTER_MAX_LENGTH), BeforeValidator(_event_filter)]
        | None
    ) = Field(
        default=None,
        description=(
            "A CEL expression over the event (event.type, event.id, event.namespace, "
            "event.priority, event.payload) that must be true for the event to be "
            'delivered here, e.g. event.payload.severity == "critical". Compiled when the '
            "target is applied: a bad expression makes Ready=False with the compiler's "
            "message. At most 1024 characters and 1000 syntax-tree nodes, no comprehension "
            "nested in another; an evaluation error (a missing field: guard with has()) does "
            "not match."
        ),
    )

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (see :func:`herald_model.events.event_view`) is for this
        target."""
        if not events.any_type_matches(self.event_types, str(event.get("type", ""))):
            return False
        return self.filter is None or events.compile_filter(self.filter).matches(event)


URL_REQUIRED = (
    "is required unless the Secret named by secretRef holds it (key url) or type is pagerduty"
)


class TargetSpec(SpecModel):
    """Where and how to deliver. Credentials never appear here: they live in the Secret
    named by secretRef."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": rules(
            (
                "self.type == 'pagerduty' || has(self.url) || has(self.secretRef)",
                f"url {URL_REQUIRED}",
            )
        )
    }

    type: Literal["webhook", "slack", "pagerduty"] = Field(
        description=(
            "Kind of receiver: webhook (HTTP POST of the job's JSON payload with the Standard "
            "Webhooks headers webhook-id, webhook-timestamp and, with a signing secret, "
            "webhook-signature), slack (incoming webhook) or pagerduty (Events API v2)."
        )
    )
    url: (
        Annotated[str, Field(max_length=2048, pattern=URL_PATTERN), BeforeValidator(_url)] | None
    ) = Field(
        default=None,
        json_schema_extra={
            "format": "uri",
            **rules(
                (
                    "!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')",
                    f"url {USERINFO_PROBLEM}",
                )
            ),
        },
        description=(
            "Endpoint URL: http:// or https://, with a host and without credentials "
            "(user:password@ is refused: keep such a URL in the Secret). Optional for "
            "pagerduty (default: the Events API v2 enqueue URL) and when the Secret named "
            "by secretRef has a `url` key, which takes precedence (Slack webhook URLs are "
            "credentials: keep them in the Secret)."
        ),
    )
    secret_ref: SecretRef | None = Field(default=None, alias="secretRef")
    headers: dict[HeaderName, HeaderValue] = Field(
        default={},  # pydantic copies it for each spec
        max_length=MAX_HEADERS,
        json_schema_extra=rules(
            (
                f'self.all(k, k.matches("^{HEADER_NAME_PATTERN}$"))',
                "header names must be HTTP tokens (letters, digits and !#$%&'*+-.^_`|~)",
            ),
            (
                f"!self.exists(k, k.lowerAscii() in [{_quoted(RESERVED_HEADERS)}])",
                "headers cannot set Content-Type, Content-Length, Host, User-Agent, "
                "webhook-id, webhook-timestamp or webhook-signature (any case): Herald sets "
                "them",
            ),
            (
                f"!self.exists(k, k.lowerAscii() in [{_quoted(CREDENTIAL_HEADERS)}])",
                "headers cannot carry credentials (Authorization, Proxy-Authorization, "
                "Cookie): put them in the target's Secret (secretRef); a webhook target "
                "sends the Secret's key authorization as its Authorization header",
            ),
        ),
        description=(
            "Extra HTTP headers sent with every request, name to value. Headers Herald sets "
            "itself (Content-Type, Content-Length, Host, User-Agent, webhook-id, "
            "webhook-timestamp, webhook-signature) cannot be set here, nor credentials "
            "(Authorization, Proxy-Authorization, Cookie), which come from the Secret."
        ),
    )
    timeout: float = Field(
        default=10.0,
        alias="timeoutSeconds",
        gt=0,
        le=300,
        description="Timeout of one delivery attempt, in seconds.",
    )
    # The API server checks retry's CEL rule against this default as written, before the
    # nested defaults apply: the CRD's default spells every field out (a model's does).
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerPolicy = Field(
        default=CircuitBreakerPolicy(), alias="circuitBreaker"
    )
    rate_limit: RateLimit | None = Field(default=None, alias="rateLimit")
    capacity: CapacityPolicy | None = None
    subscriptions: Subscriptions | None = None
    paused: bool = Field(
        default=False,
        description=(
            "Hold deliveries: jobs are still accepted and wait in the queue until the target "
            "is resumed."
        ),
    )
    disable_after: float | None = Field(
        default=None,
        alias="disableAfterSeconds",
        ge=0,
        le=31_536_000,
        description=(
            "Disable the target after its deliveries have failed continuously (no success in "
            "between) for this long: its jobs wait, a Disabled condition and an Event say so, "
            "and `herald targets enable NAME` brings it back. 0 never disables; unset uses "
            "the workers' HERALD_DISABLE_AFTER (5 days)."
        ),
    )

    @model_validator(mode="after")
    def _url_required(self) -> TargetSpec:
        if self.type != "pagerduty" and self.url is None and self.secret_ref is None:
            raise problem(URL_REQUIRED, field="url")
        return self

    @property
    def secret_name(self) -> str | None:
        return None if self.secret_ref is None else self.secret_ref.name


@dataclasses.dataclass(frozen=True)
class PublishingTarget:
    namespace: str
    name: str
    spec: TargetSpec
    generation: int = 0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_spec(spec: object) -> TargetSpec:
    """Check a PublishingTarget spec and complete it with defaults."""
    try:
        return check(TargetSpec, spec)
    except SpecError as exc:
        raise InvalidTarget(str(exc)) from None


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
    if not isinstance(metadata, Mapping):
        raise InvalidTarget("metadata: must be a mapping (name, namespace)")
    name = metadata.get("name")
    namespace = metadata.get("namespace") or default_namespace
    if not isinstance(name, str) or not is_object_name(name):
        raise InvalidTarget(f"metadata.name: must be a Kubernetes object name, got {name!r}")
    if not isinstance(namespace, str) or not is_object_name(namespace):
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
