"""Liveness and readiness of the worker, as /healthz and /readyz report them."""

from __future__ import annotations

import logging
import time

from herald_queue import db
from herald_queue.listener import Listener
from herald_worker.metrics import Metrics

log = logging.getLogger("herald.health")


class Health:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.listener: Listener | None = None
        self.database_up = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.stopping = False
        self.failed: str | None = None
        """Set when the worker loop died: /healthz then fails (the pod is restarted)."""

    def database_ok(self) -> None:
        if not self.database_up:
            log.info("database reachable; delivering", extra={"action": "database"})
        self.database_up = True
        self._update()

    def database_error(self, exc: BaseException) -> None:
        """A database operation failed. Only a connection failure pauses deliveries and
        makes the worker unready; anything the server answered (a deadlock, a lock timeout,
        a cancelled statement) is logged as what it is, and the operation is retried."""
        if not db.is_connection_failure(exc):
            log.warning(
                "database operation failed; retrying",
                extra={"action": "database", "error": db.what_happened(exc)},
            )
            return
        if self.database_up:
            log.error(
                "database unreachable; deliveries paused until it is back",
                extra={"action": "database", "error": type(exc).__name__},
            )
        self.database_up = False
        self.last_error = type(exc).__name__
        self.last_error_at = time.time()
        self._update()

    def stop(self) -> None:
        """Shutting down: unready from now on (and answers close their connections)."""
        self.stopping = True
        self._update()

    @property
    def ready(self) -> bool:
        listening = self.listener is not None and self.listener.connected.is_set()
        return self.database_up and listening and not self.stopping and self.failed is None

    def reasons(self) -> list[str]:
        """Why not ready, in words."""
        out = []
        if not self.database_up:
            out.append(f"PostgreSQL is not reachable ({self.last_error or 'not connected yet'})")
        if self.listener is None or not self.listener.connected.is_set():
            out.append("not listening for new jobs (LISTEN connection down)")
        if self.stopping:
            out.append("shutting down")
        if self.failed:
            out.append(f"worker failed: {self.failed}")
        return out

    def _update(self) -> None:
        self._metrics.ready.set(1 if self.ready else 0)
