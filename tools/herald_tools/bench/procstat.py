"""CPU time and memory of processes, from /proc (Linux): what the delivery benchmark
charges to the workers, the receiver and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    text = (PROC / str(pid) / "stat").read_text()
    # The command name is in parentheses and may hold spaces: split after its last ")".
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU seconds of ``pids`` (those that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def children_of(parent: int) -> list[int]:
    """``parent`` and the processes whose parent it is (PostgreSQL's backends)."""
    pids = [parent]
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if parent_of(int(entry.name)) == parent:
                    pids.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return pids


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (VmRSS), MiB; 0 when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
