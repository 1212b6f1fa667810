"""``herald``: one console script for every Herald process and for people at a terminal.

Every failure a user can cause ends in one line on stderr (``herald: error: ...``) and a
non-zero exit status: 2 for a command line that cannot be understood or a setting that
cannot be used (one line per bad variable), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

from herald_core.errors import HeraldError, SettingsError
from herald_core.settings import LOG_LEVELS, LogSettings, check
from herald_queue import db

# (command, module in herald_tools.cli, help): each module has add_arguments(parser) and
# async run(args) -> int, and may have settings() -> the settings classes it reads, checked
# with HERALD_LOG_* before it runs (every bad variable is said at once). Modules import
# their heavy dependencies (kopf, the worker) inside run(), so `herald migrate` never loads
# kopf.
COMMANDS: list[tuple[str, str, str]] = [
    ("migrate", "migrate_cmd", "create or upgrade Herald's tables (idempotent, safe in parallel)"),
    ("targets", "targets_cmd", "register PublishingTarget manifests and list targets"),
    ("enqueue", "enqueue_cmd", "submit one job, or JSON lines of jobs from stdin"),
    ("events", "events_cmd", "publish an event to every target subscribed to its type"),
    ("jobs", "jobs_cmd", "show or list jobs"),
    ("tracker", "tracker_cmd", "list or clear a running worker's LRU tracker of recent jobs"),
    ("stats", "stats_cmd", "queue depth per state, priority and target"),
    ("dlq", "dlq_cmd", "list, show, replay and purge dead letters"),
    ("worker", "worker_cmd", "run the delivery worker (the data plane)"),
    ("operator", "operator_cmd", "run the Kubernetes operator (the control plane)"),
    ("demo", "demo_cmd", "watch Herald ride out a misbehaving receiver, end to end"),
    ("receive", "receive_cmd", "a local webhook receiver that prints and verifies deliveries"),
    ("bench", "bench_cmd", "measure enqueue, drain and latency figures"),
    ("db", "db_cmd", "manage the embedded PostgreSQL"),
]


class _SubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Sub-commands whose help pages open with their one-line help, at every level
    (`herald dlq replay --help` says what replay does, not only its options)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary = kwargs.get("help")
        if summary and kwargs.get("description") is None:
            kwargs["description"] = summary[0].upper() + summary[1:].rstrip(".") + "."
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubParsers)

    def error(self, message: str) -> Any:  # one line, exit 2, like every other error
        self.exit(2, f"herald: error: {message} (see `{self.prog} --help`)\n")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a log level (one of {', '.join(LOG_LEVELS)})"
        )
    return value.lower()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("herald")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="herald",
        description="Herald: a Kubernetes-native publishing queue on PostgreSQL.",
        epilog="The database is HERALD_DATABASE_URL; without it, an embedded PostgreSQL "
        "under HERALD_DATA_DIR is started and used.",
    )
    parser.add_argument("--version", action="version", version=f"herald {_version()}")
    parser.add_argument(
        "--log-level",
        default=None,
        type=_log_level,
        help=f"{', '.join(LOG_LEVELS)} (default: "
        "HERALD_LOG_LEVEL, or warning for commands, info for processes)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module, help_text in COMMANDS:
        command = sub.add_parser(name, help=help_text)
        importlib.import_module(f"herald_tools.cli.{module}").add_arguments(command)
        command.set_defaults(module=module)
    return parser


def _refuse(exc: SettingsError) -> int:
    """Settings that cannot be used: one line per bad variable, exit status 2."""
    for line in exc.lines:
        print(f"herald: error: {line}", file=sys.stderr)
    return 2


def _loop_factory(command: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The worker runs on uvloop: less CPU per delivery (×0.88 for the worker process in an
    interleaved A/B of `herald bench --deliver`); other commands on asyncio's own loop."""
    if command != "worker":
        return None
    import uvloop

    return uvloop.new_event_loop


class Terminated(BaseException):
    """SIGTERM arrived: the command stops (exit status 143, as a shell reports it)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


STOP_BOUND = 10.0
"""Seconds a command may take to stop after SIGTERM or SIGINT; then it exits at once,
saying where it was."""
EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}


async def _until_signalled(command: Any, watchdogs: list[threading.Timer]) -> int:
    """Run ``command`` and cancel it on SIGTERM (exit 143) or SIGINT (exit 130). A process
    that handles them itself (the worker, kopf's operator, ``herald receive``) replaces
    these handlers with its own graceful stop.

    Without a handler, SIGTERM to PID 1 (a container's main process, e.g. the chart's
    migration Job) is dropped by the kernel: a `herald migrate` waiting for its lock would
    then ignore `kubectl delete` and Job deadlines until SIGKILL. A command still running
    STOP_BOUND seconds after the signal (a cancellation lost in a library), or given a
    second one, exits at once with a line saying where it was: never a hang. The caller
    cancels ``watchdogs`` once the event loop has closed."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            _exit_now(sig, task, "a second signal")
        received.append(sig)
        task.cancel()
        watchdog = threading.Timer(
            STOP_BOUND, _exit_now, (sig, task, f"still stopping {STOP_BOUND:g} s after it")
        )
        watchdog.daemon = True  # a thread: it fires even if the event loop is blocked
        watchdogs.append(watchdog)
        watchdog.start()

    for sig in EXIT_STATUS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return int(await command or 0)
    except asyncio.CancelledError:
        if received and received[0] == signal.SIGTERM:
            raise Terminated from None
        if received:
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig in EXIT_STATUS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def _exit_now(sig: signal.Signals, task: asyncio.Task[Any], why: str) -> None:
    print(
        f"herald: {sig.name}: {why}; exiting without cleaning up (it was {_where(task)})",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXIT_STATUS[sig])


def _where(task: asyncio.Task[Any]) -> str:
    """The coroutines ``task`` waits in, innermost first: ``waiting in sleep (tasks.py:649)
    ← watch (stats_cmd.py:109) ← …`` (four at most)."""
    if task.done():
        return "done, in the event loop's shutdown"
    chain = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            name = Path(frame.f_code.co_filename).name
            chain.append(f"{frame.f_code.co_name} ({name}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return "waiting in " + " ← ".join(reversed(chain[-4:])) if chain else "between steps"


def main(argv: Sequence[str] | None = None) -> int:
    # Until the event loop takes over, SIGTERM ends the command too (see _until_signalled).
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except Terminated:
        print("herald: stopped by SIGTERM", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from herald_tools.cli import logs

    module = importlib.import_module(f"herald_tools.cli.{args.module}")
    try:
        check(LogSettings, *(module.settings() if hasattr(module, "settings") else ()))
    except SettingsError as exc:
        return _refuse(exc)
    process = args.command in ("worker", "operator")
    db.name_process(args.command)
    logs.configure(args.log_level, LogSettings.from_env(), process=process)
    watchdogs: list[threading.Timer] = []
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.command)) as runner:
            return runner.run(_until_signalled(module.run(args), watchdogs))
    except SettingsError as exc:
        return _refuse(exc)
    except HeraldError as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        print(f"herald: error: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
        return 1
    except psycopg.errors.LockNotAvailable:
        print(
            "herald: error: gave up waiting for a lock another session holds on Herald's "
            "tables (HERALD_DB_LOCK_TIMEOUT); `herald migrate` or a long transaction may be "
            "running: see pg_stat_activity, then try again",
            file=sys.stderr,
        )
        return 1
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        return _database_error(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line, the traceback only with --log-level DEBUG
        print(
            f"herald: error: unexpected {type(exc).__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0]} (a bug in Herald: please report it, "
            "with the traceback `--log-level DEBUG` prints)",
            file=sys.stderr,
        )
        logging.getLogger("herald").debug("the unexpected error", exc_info=True)
        return 1
    finally:
        for watchdog in watchdogs:  # stopped in time
            watchdog.cancel()
        logging.shutdown()


def _database_error(exc: BaseException) -> int:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if db.is_connection_failure(exc):  # lost mid-command
        print(
            f"herald: error: lost the connection to PostgreSQL: {reason}. Check "
            "HERALD_DATABASE_URL and that the server is up.",
            file=sys.stderr,
        )
    else:  # the server refused something no check above caught
        print(f"herald: error: PostgreSQL refused it: {reason}", file=sys.stderr)
        logging.getLogger("herald").debug("the database error", exc_info=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
