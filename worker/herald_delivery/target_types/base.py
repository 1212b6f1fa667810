"""What every publishing target type shares: the request it renders, the context it renders
from, the checks of the endpoint and the Secret, and the headers Herald always sends.

Nothing here sends anything: the worker posts the :class:`OutgoingRequest`, retries and
classifies failures. Every message written here may reach a person (status conditions,
the dead-letter queue, logs), so none contains a Secret value: not a key, not a signing
secret, not a Secret ``url`` (Slack webhook URLs are credentials).
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.metadata
import json
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from herald_core.errors import HeraldError, InvalidTarget
from herald_core.json_depth import MAX_DEPTH_CEILING, deeper_than
from herald_model.target_spec import RESERVED_HEADERS, PublishingTarget, TargetSpec, check_url

try:
    VERSION = importlib.metadata.version("herald")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    VERSION = "dev"

USER_AGENT = f"Herald/{VERSION}"

URL_KEY = "url"
"""The Secret key that overrides ``spec.url`` for every type (a Slack URL is a credential)."""


@dataclasses.dataclass(frozen=True)
class OutgoingRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"

    def __repr__(self) -> str:
        # The URL may be a credential (Slack), the body may hold one (PagerDuty's routing
        # key): a repr that reaches a log shows neither.
        host = urlsplit(self.url).hostname or "?"
        names = ", ".join(sorted(self.headers))
        return (
            f"OutgoingRequest(method={self.method!r}, host={host!r}, headers=[{names}], "
            f"body=<{len(self.body)} bytes>)"
        )


@dataclasses.dataclass(frozen=True)
class RenderContext:
    job_id: uuid.UUID
    attempt: int
    """1 on the first delivery."""
    payload_json: str
    """The job payload exactly as stored (compact JSON text)."""
    target: PublishingTarget
    secrets: Mapping[str, str] = dataclasses.field(repr=False)
    """Decoded data of the Secret named by ``spec.secretRef`` ({} if none). Never shown."""
    timestamp: int
    """Unix seconds: the time of this attempt, for signatures."""

    def payload(self) -> Any:
        """The payload parsed; :class:`InvalidPayload` if it is not JSON, or nested too deeply
        to decode safely (a row stored before HERALD_MAX_PAYLOAD_DEPTH refused it)."""
        depth = deeper_than(self.payload_json, MAX_DEPTH_CEILING)
        if depth is not None:
            raise InvalidPayload(
                f"the job payload is nested {depth} levels deep, more than the "
                f"{MAX_DEPTH_CEILING} a payload can be decoded at to render it"
            )
        try:
            return json.loads(self.payload_json)
        except ValueError as exc:
            raise InvalidPayload(f"the job payload is not valid JSON ({exc})") from None
        except RecursionError:
            raise InvalidPayload("the job payload is nested too deeply to decode") from None


class InvalidPayload(HeraldError):
    """The payload cannot be rendered for this target type: a permanent failure (DLQ)."""


def secret_value(secrets: Mapping[str, str], key: str) -> str | None:
    """The value of ``key`` without surrounding whitespace (``echo`` into a Secret adds a
    newline), or None when the key is absent."""
    value = secrets.get(key)
    return None if value is None else value.strip()


def secret_label(spec: TargetSpec) -> str:
    return f"Secret {spec.secret_name}" if spec.secret_name else "the Secret"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) endpoint, without repeating the URL (it may be a
    credential), or None when it is usable."""
    why = check_url(url, allow_userinfo=True)  # the Secret may hold credentials
    if why is None:
        return None
    if why.startswith("must not contain control characters"):
        return "contains control characters (such as NUL or a line break)"
    if any(c.isspace() for c in url):
        return "contains whitespace"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "is not a valid URL (bad port or brackets)"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    return "has no host"


def json_body(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the receiving APIs expect it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, ending with ``marker`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


class TargetType(abc.ABC):
    """One kind of publishing target. Subclasses set the class attributes, add their own
    checks in :meth:`check_secrets` and build the request in :meth:`render`."""

    name: str
    """``spec.type``: "webhook", "slack", "pagerduty"."""
    required_secret_keys: frozenset[str] = frozenset()
    optional_secret_keys: frozenset[str] = frozenset({URL_KEY})
    default_url: str | None = None
    """The endpoint when neither the Secret nor the spec names one (None: one is needed)."""
    secret_key_help: ClassVar[Mapping[str, str]] = {}
    """What each Secret key holds, for messages: ``{"routingKey": "PagerDuty's ..."}``."""

    def __repr__(self) -> str:
        return f"<target type {self.name}>"

    # -- configuration ----------------------------------------------------------------

    def check(self, spec: TargetSpec, secrets: Mapping[str, str] | None) -> list[str]:
        """Problems with this type's configuration, each a sentence naming the field or
        the Secret key; [] when usable. ``secrets=None``: the Secret could not be read
        (its checks are skipped). A spec without ``secretRef`` has no Secret: it is
        checked as an empty one."""
        problems: list[str] = []
        if spec.type != self.name:
            problems.append(f"spec.type is {spec.type!r}, not {self.name!r}")
        if spec.secret_name is None and secrets is None:
            secrets = {}
        label = secret_label(spec)
        if secrets is not None:
            url = secret_value(secrets, URL_KEY)
            if url and (why := url_problem(url)) is not None:
                problems.append(f"{label} key {URL_KEY} {why} (the value is not shown)")
            for key in sorted(self.required_secret_keys):
                value = secret_value(secrets, key)
                if spec.secret_name is None:
                    problems.append(
                        f"spec.secretRef is required: a {self.name} target needs a Secret "
                        f"with key {key} ({self.secret_key_help.get(key, key)})"
                    )
                elif value is None:
                    problems.append(
                        f"{label} has no key {key} ({self.secret_key_help.get(key, key)})"
                    )
                elif not value:
                    problems.append(
                        f"{label} key {key} is empty ({self.secret_key_help.get(key, key)})"
                    )
            if self.default_url is None and spec.url is None and not url:
                if spec.secret_name is None:
                    problems.append(
                        f"spec.url is required (or a Secret named by spec.secretRef with "
                        f"key {URL_KEY}): a {self.name} target has no default endpoint"
                    )
                else:
                    problems.append(
                        f"{label} has no key {URL_KEY} and spec.url is not set: a "
                        f"{self.name} target needs an endpoint URL in one of them"
                    )
            problems.extend(self.check_secrets(spec, secrets))
        return problems

    def check_secrets(self, spec: TargetSpec, secrets: Mapping[str, str]) -> list[str]:
        """This type's own checks of the Secret's keys (presence is checked already)."""
        return []

    def endpoint(self, spec: TargetSpec, secrets: Mapping[str, str]) -> str:
        """The URL to POST to: Secret key ``url`` if present (and not blank), else
        ``spec.url``, else the type's default. :class:`InvalidTarget` when there is none, or
        when the Secret's is not a usable URL (checked here, so that no HTTP client error
        ever repeats it: it may be a credential)."""
        url = secret_value(secrets, URL_KEY)
        if url:
            if (why := url_problem(url)) is not None:
                raise InvalidTarget(
                    f"{secret_label(spec)} key {URL_KEY} {why} (the value is not shown)"
                )
            return url
        if spec.url is not None:
            return spec.url
        if self.default_url is not None:
            return self.default_url
        raise InvalidTarget(
            f"a {self.name} target needs an endpoint: set spec.url or key {URL_KEY} in "
            f"{secret_label(spec)}"
        )

    def require_secret(self, ctx: RenderContext, key: str) -> str:
        """A required Secret value; :class:`InvalidTarget` (naming the key, never the value)
        when it is missing or empty: the target, not the job, must be fixed."""
        value = secret_value(ctx.secrets, key)
        if not value:
            spec = ctx.target.spec
            state = "has no key" if value is None else "has an empty key"
            where = (
                f"{secret_label(spec)} {state}"
                if spec.secret_name
                else "spec.secretRef is not set: no Secret with"
            )
            raise InvalidTarget(
                f"PublishingTarget {ctx.target.ref}: {where} {key} "
                f"({self.secret_key_help.get(key, key)})"
            )
        return value

    # -- requests ---------------------------------------------------------------------

    def headers(self, spec: TargetSpec, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``spec.headers``, then Herald's own (which win, whatever their case)."""
        own = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(extra or {})}
        taken = {name.lower() for name in own} | RESERVED_HEADERS
        headers = {k: v for k, v in spec.headers.items() if k.lower() not in taken}
        headers.update(own)
        return headers

    @abc.abstractmethod
    def render(self, ctx: RenderContext) -> OutgoingRequest:
        """The request delivering ``ctx``'s job; :class:`InvalidPayload` if it cannot be."""
