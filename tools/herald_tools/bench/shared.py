"""What every benchmark shares, Herald's and the peer comparisons' (``compare/``): the
job payload and the environment block a report starts with. Standard library and psycopg
only, so the comparisons load this very file in their own venvs (``compare/common.py``):
nothing here is copied.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import psycopg

# What an Alertmanager alert turned into a job looks like (about 400 bytes of JSON).
SAMPLE = {
    "status": "firing",
    "labels": {
        "alertname": "HighRequestLatency",
        "severity": "warning",
        "service": "checkout",
        "namespace": "shop",
        "instance": "10.0.3.17:8080",
        "job": "checkout",
    },
    "annotations": {
        "summary": "p99 latency above 500ms for 10 minutes",
        "runbook_url": "https://runbooks.example.com/checkout/latency",
    },
    "startsAt": "2026-11-20T10:00:00Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus.example.com/graph?g0.expr=latency",
    "fingerprint": "c8a4d1b2e3f40516",
}

SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "wal_sync_method",
    "checkpoint_timeout",
    "max_wal_size",
)
"""The server settings a report shows, so figures from two machines can be compared."""


async def describe_server(url: str) -> dict[str, Any]:
    """The environment block of every benchmark report (``herald bench --json``)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        settings = {}
        for name in SETTINGS:
            cur = await conn.execute(f"SHOW {name}".encode())
            row = await cur.fetchone()
            settings[name] = row[0] if row else None
    return {
        "postgresql": settings,
        "python": sys.version.split()[0],
        "machine": {"cpus": cpus(), "platform": platform.platform()},
    }


def cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
