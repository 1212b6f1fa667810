"""Whether a PublishingTarget can be used: the checks its schema cannot make. Pure code:
the caller reads the Secret and passes what it found.

The answer is the Ready condition. Its reasons, each with a message that names the field
or the Secret key (never a Secret value) and says what to do:

========================  =======  ===================================================
reason                    status   meaning
========================  =======  ===================================================
Ready                     True     registered; the workers deliver to it
InvalidSpec               False    the spec breaks a rule of its type (field paths)
EgressDenied              False    spec.url names an address the egress policy refuses
SecretNotFound            False    spec.secretRef names a Secret that does not exist
SecretKeyMissing          False    the Secret lacks a key the type needs (or it is empty)
SecretInvalid             False    a key's value is not usable (e.g. not "whsec_...")
SecretUnreadable          Unknown  the operator may not read the Secret (RBAC)
SecretUnavailable         Unknown  the Kubernetes API did not answer; checked again later
DatabaseUnavailable       Unknown  PostgreSQL is unreachable; registration is retried
========================  =======  ===================================================

A target whose Secret has a problem is registered all the same: the workers hold its jobs
(without spending attempts) until the Secret is fixed, and the operator notices the fix on
its next status refresh.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from herald_core.errors import InvalidTarget
from herald_delivery import target_types
from herald_delivery.egress import EgressPolicy
from herald_delivery.target_types.base import URL_KEY, TargetType, secret_value
from herald_model.target_spec import PublishingTarget, TargetSpec, parse_spec, parse_target
from herald_operator.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    Transition,
    normal,
    transitioned,
    warning,
)

READY = "Ready"


class SecretOutcome(enum.Enum):
    FOUND = "found"
    MISSING = "missing"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    UNDECODABLE = "undecodable"


@dataclasses.dataclass(frozen=True)
class SecretRead:
    """What reading a target's Secret from the Kubernetes API gave."""

    namespace: str
    name: str
    outcome: SecretOutcome
    data: Mapping[str, str] | None = dataclasses.field(default=None, repr=False)
    """Decoded values when FOUND. Never logged, never shown."""
    detail: str = ""
    """What went wrong (an HTTP status, an exception name, the undecodable key)."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A PublishingTarget manifest, parsed: the target, or why it cannot be."""

    target: PublishingTarget | None
    problem: Condition | None


def plain(value: Any) -> Any:
    """A deep copy made of dicts and lists (kopf hands out read-only views)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def parse(manifest: Mapping[str, Any], egress: EgressPolicy) -> Parsed:
    """Parse a PublishingTarget object as the apiserver stored it. A URL whose literal
    address ``egress`` (the workers' policy) refuses is refused here, so the user learns
    it from the status rather than from dead letters."""
    body = plain(manifest)
    try:
        parse_spec(body.get("spec") or {})
        target = parse_target(body)
    except InvalidTarget as exc:
        return Parsed(
            None,
            Condition(
                READY,
                FALSE,
                "InvalidSpec",
                f"{exc}. Fix the spec; until then Herald keeps the last valid one, if any.",
            ),
        )
    if (why := egress.url_problem(target.spec.url)) is not None:
        return Parsed(
            None,
            Condition(
                READY,
                FALSE,
                "EgressDenied",
                f"spec.url: {why} (the same HERALD_EGRESS_* settings on the operator and "
                "the workers). Until then Herald keeps the last valid spec, if any.",
            ),
        )
    return Parsed(target, None)


def _key_help(kind: TargetType) -> str:
    keys = sorted(kind.required_secret_keys) or sorted(kind.optional_secret_keys)
    required = set(kind.required_secret_keys)
    parts = []
    for key in keys:
        what = kind.secret_key_help.get(key, key)
        parts.append(f"{key} ({what}{', required' if key in required else ', optional'})")
    return ", ".join(parts)


def _missing_keys(kind: TargetType, spec: TargetSpec, data: Mapping[str, str]) -> bool:
    missing = [key for key in kind.required_secret_keys if not secret_value(data, key)]
    needs_url = kind.default_url is None and spec.url is None and not secret_value(data, URL_KEY)
    return bool(missing) or needs_url


def check(
    target: PublishingTarget, secret: SecretRead | None, egress: EgressPolicy | None = None
) -> Condition:
    """The Ready condition of a parsed target given its Secret (None: it has no
    spec.secretRef). With ``egress``, a Secret url whose literal address the policy
    refuses makes it EgressDenied (the message never shows the url)."""
    spec = target.spec
    kind = target_types.get(spec.type)
    if spec.secret_name is None:
        problems = kind.check(spec, None)
        if problems:
            return Condition(READY, FALSE, "InvalidSpec", "; ".join(problems))
        return _ready(target)
    if secret is None:
        raise ValueError("a target with spec.secretRef needs the result of reading its Secret")
    where = f"Secret {secret.ref} (spec.secretRef)"
    if secret.outcome is SecretOutcome.MISSING:
        return Condition(
            READY,
            FALSE,
            "SecretNotFound",
            f"{where} does not exist. Create it in namespace {secret.namespace} with the "
            f"keys a {spec.type} target reads: {_key_help(kind)}. Jobs wait in the queue "
            "until it exists.",
        )
    if secret.outcome is SecretOutcome.FORBIDDEN:
        return Condition(
            READY,
            UNKNOWN,
            "SecretUnreadable",
            f"the operator may not read {where}: grant its ServiceAccount get on secrets "
            f"in namespace {secret.namespace}",
        )
    if secret.outcome is SecretOutcome.UNAVAILABLE:
        return Condition(
            READY,
            UNKNOWN,
            "SecretUnavailable",
            f"cannot read {where} from the Kubernetes API ({secret.detail or 'no answer'}); "
            "checked again at the next status refresh",
        )
    if secret.outcome is SecretOutcome.UNDECODABLE or secret.data is None:
        return Condition(
            READY,
            FALSE,
            "SecretInvalid",
            f"{where}: {secret.detail or 'its data cannot be read'} (values must be UTF-8 text)",
        )
    problems = kind.check(spec, secret.data)
    secret_url = secret_value(secret.data, URL_KEY)
    if not problems and egress is not None and egress.url_problem(secret_url):
        return Condition(
            READY,
            FALSE,
            "EgressDenied",
            f"{where} key {URL_KEY} names an address the egress policy refuses (the value "
            "is not shown): the workers would refuse every delivery. Point it elsewhere, "
            "or allow the address (HERALD_EGRESS_ALLOW, HERALD_EGRESS_ALLOW_LOOPBACK).",
        )
    if not problems:
        return _ready(target)
    reason = "SecretKeyMissing" if _missing_keys(kind, spec, secret.data) else "SecretInvalid"
    return Condition(
        READY,
        FALSE,
        reason,
        "; ".join(problems) + ". Jobs wait in the queue until the Secret is fixed.",
    )


def _ready(target: PublishingTarget) -> Condition:
    message = f"registered as {target.ref}; the workers deliver its jobs"
    if target.spec.paused:
        message += " once it is resumed (spec.paused is true: deliveries are held)"
    return Condition(READY, TRUE, "Ready", message)


def database_unavailable(error: str, retry_in: float) -> Condition:
    return Condition(
        READY,
        UNKNOWN,
        "DatabaseUnavailable",
        f"cannot register the target: PostgreSQL is unreachable ({error}); retrying in "
        f"{retry_in:g}s",
    )


def notice(was: Mapping[str, Any] | None, now: Condition) -> Transition | None:
    """The Event for a Ready condition whose status changed from ``was`` (the one last
    announced), or None."""
    if not transitioned([was] if was else None, now):
        return None
    if now.status == TRUE:
        return normal("Ready", now.message, f"target is ready: {now.message}")
    lost = "no longer ready: " if was and was.get("status") == TRUE else ""
    return warning(
        now.reason, lost + now.message, f"target is not ready ({now.reason}): {now.message}"
    )
