"""The operator at scale on a real API server: N PublishingTargets applied at once.

    python -m herald_tools.bench.control_plane [--targets 1000] [--idle 30] [--json]

Starts the throwaway control plane of the real-API tests (scripts/build-kube.sh builds
it), an embedded PostgreSQL, installs the chart, runs ``herald operator`` as the chart's
ServiceAccount, applies N targets in one ``kubectl apply`` and reports:

- seconds until every target is Ready (and the first one);
- the operator's peak RSS (from /proc) while it reconciles, and at rest;
- its API requests per second while idle, by verb (from the API server's audit log), and
  status writes per target per refresh while nothing changes (the goal: none);
- how far status lags a change in PostgreSQL (one target's circuit opened by SQL, then
  seen in its status), against the refresh period.

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from tests.cluster.controlplane import control_plane, find_binaries
from tests.cluster.herald import Kubectl, herald_release, run, wait_default_account
from tests.helpers import wait_until

from herald_queue import embedded, migrate

STATUS_INTERVAL = 10.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def target_docs(n: int) -> str:
    docs = [
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": f"t{i:05d}"},
            "spec": {"type": "webhook", "url": f"https://hooks.example.com/{i}"},
        }
        for i in range(n)
    ]
    return yaml.safe_dump_all(docs)


async def measure(n: int, idle: float, kubectl_path: str, helm_path: str) -> dict[str, Any]:
    folder = find_binaries()
    if folder is None:
        raise SystemExit("the control plane is not built: run scripts/build-kube.sh")
    pg_dir, url = _start_postgres()
    dbname = f"herald_bench_{uuid.uuid4().hex[:8]}"
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
        db_url = psycopg.conninfo.make_conninfo(url, dbname=dbname)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await migrate.migrate(conn)
        with control_plane(folder) as kube:
            admin = Kubectl(kubectl_path, kube.admin_kubeconfig, "default")
            await admin("apply", "-f", str(Path(__file__).parents[1] / "crds"))
            await admin("create", "namespace", "bench")
            kubectl = admin.in_namespace("bench")
            await wait_default_account(kubectl)
            async with herald_release(
                kube,
                kubectl,
                helm_path,
                db_url,
                operator={
                    "scaling": {"enabled": False},
                    "extraEnv": [
                        {"name": "HERALD_STATUS_INTERVAL", "value": f"{STATUS_INTERVAL:.0f}s"}
                    ],
                },
            ) as herald:
                operator = await herald.operator()
                pid = operator.popen.pid
                account = herald.accounts()[0]
                rest_before = rss_mib(pid)
                started = time.monotonic()
                await run(
                    [
                        kubectl_path,
                        f"--kubeconfig={kube.admin_kubeconfig}",
                        "-n",
                        "bench",
                        "apply",
                        "-f",
                        "-",
                    ],
                    input=target_docs(n),
                    timeout=600,
                )
                applied = time.monotonic() - started
                peak = rest_before
                first_ready: float | None = None

                async def all_ready() -> bool:
                    nonlocal peak, first_ready
                    peak = max(peak, rss_mib(pid))
                    ready = await _ready_count(kubectl)
                    if ready and first_ready is None:
                        first_ready = time.monotonic() - started
                    return ready == n

                await wait_until(all_ready, timeout=1800, interval=1.0, what=f"{n} targets Ready")
                all_ready_s = time.monotonic() - started
                # Idle: nothing changes; count the operator's requests over a window.
                await asyncio.sleep(STATUS_INTERVAL * 1.5)  # the first refreshes settle
                mark = len(kube.audit(account))
                window_start = time.monotonic()
                while time.monotonic() - window_start < idle:
                    peak = max(peak, rss_mib(pid))
                    await asyncio.sleep(1)
                window = time.monotonic() - window_start
                events = kube.audit(account)[mark:]
                verbs: collections.Counter[str] = collections.Counter()
                status_writes = 0
                for event in events:
                    ref = event.get("objectRef") or {}
                    what = ref.get("resource", "") + (
                        "/" + ref["subresource"] if ref.get("subresource") else ""
                    )
                    verbs[f"{event['verb']} {what}"] += 1
                    if event["verb"] == "patch" and ref.get("subresource") == "status":
                        status_writes += 1
                ticks = window / STATUS_INTERVAL
                # Status lag: a change in PostgreSQL until the object shows it.
                async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
                    await c.execute(
                        "UPDATE herald.targets SET circuit_state = 'open', circuit_open_until ="
                        " now() + interval '1 hour' WHERE name = 't00000'"
                    )
                changed = time.monotonic()
                await wait_until(
                    lambda: _circuit(kubectl, "t00000", "open"),
                    timeout=120,
                    interval=0.2,
                    what="the open circuit in status",
                )
                lag = time.monotonic() - changed
                return {
                    "targets": n,
                    "apply_seconds": round(applied, 1),
                    "first_ready_seconds": round(first_ready or 0.0, 1),
                    "all_ready_seconds": round(all_ready_s, 1),
                    "operator_rss_mib_at_start": round(rest_before, 1),
                    "operator_rss_mib_peak": round(peak, 1),
                    "operator_rss_mib_idle": round(rss_mib(pid), 1),
                    "idle_window_seconds": round(window, 1),
                    "idle_requests_per_second": round(len(events) / window, 2),
                    "idle_requests_by_verb": dict(verbs.most_common()),
                    "idle_status_writes_per_target_per_refresh": round(
                        status_writes / max(1.0, ticks) / n, 4
                    ),
                    "status_interval_seconds": STATUS_INTERVAL,
                    "status_lag_seconds": round(lag, 1),
                }
    finally:
        embedded.stop(pg_dir)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _start_postgres() -> tuple[Path, str]:
    pg_dir = Path(tempfile.mkdtemp(prefix="herald-bench-pg-"))
    pg_dir.chmod(0o755)  # the embedded server may run as another user
    return pg_dir, embedded.start(pg_dir)


async def _ready_count(kubectl: Kubectl) -> int:
    result = await kubectl("get", "publishingtargets", "-o", "json")
    return sum(
        1
        for item in result.json()["items"]
        for c in (item.get("status") or {}).get("conditions") or []
        if c.get("type") == "Ready" and c.get("status") == "True"
    )


async def _circuit(kubectl: Kubectl, name: str, state: str) -> bool:
    obj = await kubectl.get("publishingtarget", name)
    return bool(((obj or {}).get("status") or {}).get("circuit", {}).get("state") == state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kubectl = shutil.which("kubectl") or ".tools/bin/kubectl"
    helm = shutil.which("helm") or ".tools/bin/helm"
    figures = asyncio.run(measure(args.targets, args.idle, kubectl, helm))
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
    else:
        for key, value in figures.items():
            print(f"{key:45} {value}")


if __name__ == "__main__":
    main()
