"""One base error for the queue; subclasses carry the data a caller needs.

Every message says what was wrong and what to do about it: these texts reach people
through the HTTP API, the CLI and custom resource status.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence


class HeraldError(Exception):
    """Base class of every error Herald raises on purpose."""


class InvalidRequest(HeraldError):
    """Bad input: names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class TargetNotFound(HeraldError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(
            f"target {ref!r} is not registered: apply its PublishingTarget "
            "(kubectl apply, or `herald targets apply PATH` locally) first"
        )


class AmbiguousTarget(HeraldError):
    def __init__(self, name: str, namespaces: Sequence[str]) -> None:
        self.name = name
        self.namespaces = list(namespaces)
        choices = ", ".join(f"{ns}/{name}" for ns in namespaces)
        super().__init__(
            f"target name {name!r} exists in several namespaces; name it as one of: {choices}"
        )


class InvalidTarget(HeraldError):
    """A PublishingTarget (or its Secret) that cannot be used as written."""


class DatabaseUnavailable(HeraldError):
    """PostgreSQL cannot be reached; the message never contains credentials."""


class MigrationError(HeraldError):
    pass


class SchemaOutOfDate(HeraldError):
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
