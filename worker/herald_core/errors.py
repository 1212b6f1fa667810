"""One base error for the queue; subclasses carry the data a caller needs.

Every message says what was wrong and what to do about it: these texts reach people
through the HTTP API, the CLI and custom resource status.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import ClassVar


class HeraldError(Exception):
    """Base class of every error Herald raises on purpose.

    Each class says how the HTTP API answers it (``{"error": {"status", "field",
    "message"}}``): its ``http_status``, the ``field`` at fault (if one), the message
    (:meth:`http_message`) and, for a retry the client should wait for, ``retry_after``
    (the Retry-After header's seconds)."""

    http_status: ClassVar[int] = 400
    field: str | None = None
    retry_after: str | None = None

    def http_message(self) -> str:
        return str(self)


class ConfigError(HeraldError):
    """The process cannot run as configured (a setting, a missing kubeconfig...)."""


class SettingsError(ConfigError):
    """Settings the environment gives that cannot be used: one line per bad variable, each
    saying the variable, what is wrong with its value and what is accepted (never the value
    of a secret). The CLI prints the lines and exits with status 2."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


class InvalidRequest(HeraldError):
    """Bad input: names the field and the problem."""

    field: str

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class PayloadTooLarge(InvalidRequest):
    """A job payload larger than HERALD_MAX_PAYLOAD_BYTES (413)."""

    http_status = 413
    error_type: ClassVar[str] = "payload_too_large"
    """The type of the pydantic error a validator turns it into (kept by
    :func:`herald_core.validation.invalid`, which raises this class again)."""


class TargetNotFound(HeraldError):
    http_status = 404
    field = "target"

    def __init__(self, ref: str, hint: str | None = None) -> None:
        self.ref = ref
        super().__init__(
            f"target {ref!r} is not registered: "
            + (
                hint
                or "apply its PublishingTarget (kubectl apply, or `herald targets apply PATH` "
                "locally) first"
            )
        )


LISTED_TARGETS = "nothing to do (`herald targets list` shows the registered targets)"
"""The hint of :class:`TargetNotFound` for commands on an existing target (delete,
resume), where applying the target first would be the wrong advice."""


class AmbiguousTarget(HeraldError):
    field = "target"

    def __init__(self, name: str, namespaces: Sequence[str]) -> None:
        self.name = name
        self.namespaces = list(namespaces)
        choices = ", ".join(f"{ns}/{name}" for ns in namespaces)
        super().__init__(
            f"target name {name!r} exists in several namespaces; name it as one of: {choices}"
        )


class IdempotencyKeyReused(HeraldError):
    """An idempotency key sent again with other parameters than the job it created (Stripe
    answers this with 409 too): the caller mixed up two requests, and returning the first
    job would silently drop the second."""

    http_status = 409

    def __init__(self, key: str, job_id: str, *, index: int | None = None) -> None:
        self.key = key
        self.job_id = job_id
        self.index = index
        """Position of the offending job in a batch (None for a single job)."""
        self.field = "idempotencyKey" if index is None else f"[{index}].idempotencyKey"
        super().__init__(
            f"idempotency key {key!r} was already used with different parameters (payload, "
            f"priority, orderingKey or runAt) for job {job_id}; send the same request to get "
            "that job again, or use a new key for a new job"
        )

    def http_message(self) -> str:
        return f"{self.field}: {self}"


class DeadLetterNotFound(HeraldError):
    http_status = 404
    field = "ids"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(f"no dead letter {', '.join(names)} (see `herald dlq list`)")


class AlreadyReplayed(HeraldError):
    """Every dead letter a replay named by id was replayed before (each is, once ever)."""

    http_status = 409
    field = "ids"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        what, was = ("dead letter", "was") if len(names) == 1 else ("dead letters", "were")
        super().__init__(
            f"{what} {', '.join(names)} {was} already replayed (each is replayed once; if the "
            "job failed again, it has a new dead letter: `herald dlq list --not-replayed`)"
        )


class TargetsMissing(HeraldError):
    """Every dead letter a replay named by id was skipped: their targets no longer exist."""

    http_status = 409
    field = "target"

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)
        what = "target" if len(targets) == 1 else "targets"
        super().__init__(
            f"{what} {', '.join(targets)} no longer {'exists' if len(targets) == 1 else 'exist'}"
            ": nothing was replayed, and the dead letters are marked target-missing (replay "
            "them again once the target is recreated)"
        )


class QueueFull(HeraldError):
    """A hard capacity limit refused a submission (herald_queue.capacity); the API answers
    429 with Retry-After."""

    http_status = 429
    field = "target"
    retry_after: str

    def __init__(self, message: str, retry_after: str) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Overloaded(HeraldError):
    """The worker could not finish the work a request needs in time (an event's filters);
    nothing was written. The API answers 503 with Retry-After."""

    http_status = 503
    retry_after = "5"


class InvalidTarget(HeraldError):
    """A PublishingTarget (or its Secret) that cannot be used as written."""

    field = "target"


class Unauthenticated(HeraldError):
    """The bearer token is missing, or the API server does not accept it (401)."""

    http_status = 401
    field = "Authorization"


class Forbidden(HeraldError):
    """The identity lacks the RBAC permission the request needs (403); the message names it."""

    http_status = 403
    field = "Authorization"


class AuthUnavailable(HeraldError):
    """The Kubernetes API could not answer a review in time (503): nothing was done."""

    http_status = 503
    retry_after = "2"


class IngestClosed(HeraldError):
    """The queue is closing (the process is shutting down) before the job was written."""

    http_status = 503
    retry_after = "1"

    def __init__(self) -> None:
        super().__init__(
            "the worker is shutting down and did not write the job in time; send it again "
            "(to another worker; with an idempotency key it cannot be written twice)"
        )


DATABASE_AWAY = "PostgreSQL is not available right now; nothing was written. Try again shortly."
"""What the API answers (503) while PostgreSQL cannot be used."""


class DatabaseUnavailable(HeraldError):
    """PostgreSQL cannot be reached; the message never contains credentials."""

    http_status = 503
    retry_after = "2"

    def http_message(self) -> str:
        return DATABASE_AWAY


class MigrationError(HeraldError):
    pass


class SchemaOutOfDate(HeraldError):
    http_status = 503
    retry_after = "2"

    def http_message(self) -> str:
        return DATABASE_AWAY

    def __init__(self, current: int, expected: int) -> None:
        self.current = current
        self.expected = expected
        if current > expected:
            hint = "this Herald is older than the database schema: upgrade Herald"
        else:
            hint = "run `herald migrate`"
        super().__init__(
            f"database schema is at version {current}, this Herald needs {expected}: {hint}"
        )


class CannotListen(HeraldError):
    """A process cannot open its port: in use, not allowed, or an address not of this
    host. Names the address, the reason and the setting that changes it."""

    def __init__(
        self,
        what: str,
        host: str,
        port: int,
        exc: OSError,
        *,
        port_setting: str,
        host_setting: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        if exc.errno == errno.EADDRNOTAVAIL and host_setting:
            hint = f"set {host_setting} to an address of this host (0.0.0.0 for every one)"
        elif exc.errno == errno.EADDRINUSE:
            hint = f"stop what listens there, or set {port_setting} to a free port"
        else:
            hint = f"set {port_setting} to a port this process may open"
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot serve {what} on {address}: {reason}; {hint}")
