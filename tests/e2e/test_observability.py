"""Real Prometheus scraping a running worker, and a real Alertmanager routing alerts to the
worker's receiver (Debian packages prometheus and prometheus-alertmanager)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_tools.receiver import Receiver
from herald_worker.process import Options, Running, start
from herald_worker.settings import WorkerSettings
from tests.conftest import need_binary
from tests.e2e.chart_helpers import WORKER_METRICS, series_names
from tests.e2e.observability import alertmanager, metric_names, post_alerts, prometheus, query
from tests.helpers import LOCAL_EGRESS, wait_until

TOKEN = "e2e-token"


@contextlib.asynccontextmanager
async def worker(
    db_url: str, folder: Path, receiver: Receiver, **settings: Any
) -> AsyncIterator[Running]:
    manifest = folder / "targets.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PublishingTarget",
                "metadata": {"name": "oncall", "namespace": "default"},
                "spec": {
                    "type": "webhook",
                    "url": receiver.url,
                    "retry": {
                        "initialBackoffSeconds": 0.1,
                        "maxBackoffSeconds": 0.5,
                        "jitterSeconds": 0,
                    },
                    # A capacity, so the per-target capacity series exist too.
                    "capacity": {"jobs": 1000},
                },
            }
        )
    )
    ws = WorkerSettings(
        http_host="127.0.0.1", http_port=0, poll_interval=0.1, sample_interval=0.5, **settings
    )
    async with start(
        Options(targets=manifest),
        worker_settings=ws,
        db_settings=DatabaseSettings(pool_min=1, pool_max=8),
        queue_settings=QueueSettings(),
        egress_settings=LOCAL_EGRESS,
        url=db_url,
    ) as (running, _, _):
        yield running


async def test_prometheus_scrapes_the_worker(db_url: str, tmp_path: Path) -> None:
    binary = need_binary("prometheus", "Debian package prometheus")
    promtool = need_binary("promtool", "Debian package prometheus")
    async with Receiver() as receiver, worker(db_url, tmp_path, receiver) as running:
        base = f"http://127.0.0.1:{running.port}"
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                async with http.post(
                    f"{base}/v1/jobs",
                    json={"target": "oncall", "payload": {"i": i}, "priority": "high"},
                ) as r:
                    assert r.status == 201
            await wait_until(lambda: len(receiver.delivered_ids()) == 5)
            async with http.get(f"{base}/metrics") as r:
                exposition = await r.text()
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        async with prometheus(
            binary, tmp_path, {"herald-worker": [f"127.0.0.1:{running.port}"]}
        ) as prom:

            async def scraped() -> bool:
                up = await query(prom, 'up{job="herald-worker"}')
                ready = await query(prom, "herald_worker_ready")
                return bool(
                    up and up[0]["value"][1] == "1" and ready and ready[0]["value"][1] == "1"
                )

            await wait_until(scraped, timeout=30, what="Prometheus scraped the worker")
            delivered = await query(
                prom, 'sum(herald_jobs_delivered_total{target="default/oncall"})'
            )
            assert float(delivered[0]["value"][1]) == 5
            expected = series_names(WORKER_METRICS)  # what the rules and dashboard use

            async def all_scraped() -> bool:
                return expected <= await metric_names(prom)

            await wait_until(all_scraped, timeout=20, what="every worker metric scraped")


def _alert(status_end: dt.datetime | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "node7"},
        "annotations": {"summary": "disk /var is 97% full"},
        "generatorURL": "http://prometheus.example.com/graph",
    }
    if status_end is not None:
        alert["endsAt"] = status_end.isoformat()
    return alert


async def test_alertmanager_routes_alerts_to_the_worker(db_url: str, tmp_path: Path) -> None:
    binary = need_binary("prometheus-alertmanager", "Debian package prometheus-alertmanager")
    async with (
        Receiver() as receiver,
        worker(db_url, tmp_path, receiver, api_token=TOKEN) as running,
    ):
        hook = f"http://127.0.0.1:{running.port}/v1/alertmanager/default/oncall"
        async with alertmanager(binary, tmp_path, hook, token=TOKEN) as am:
            await post_alerts(am, [_alert()])

            def messages(status: str) -> list[dict[str, Any]]:
                out = []
                for r in receiver.received:
                    body = json.loads(r.body)
                    if body.get("status") == status:
                        out.append(body)
                return out

            await wait_until(
                lambda: messages("firing"), timeout=30, what="the firing alert delivered"
            )
            [firing] = messages("firing")
            [alert] = firing["alerts"]
            assert firing["version"] == "4" and alert["labels"]["alertname"] == "DiskFull"
            assert alert["fingerprint"]

            # Alertmanager re-sends the group every 2 s: the worker recognises each re-send
            # (idempotency key) and delivers nothing more.
            def duplicates() -> float:
                return sum(
                    s.value
                    for f in running.metrics.registry.collect()
                    for s in f.samples
                    if s.name == "herald_jobs_duplicate_total"
                )

            await wait_until(
                lambda: duplicates() >= 1, timeout=30, what="Alertmanager re-sent the group"
            )
            assert len(messages("firing")) == 1

            jobs = await running.queue.jobs.list(target="default/oncall")
            assert [j.priority.value for j in jobs] == ["high"]

            # The resolve follows, after the trigger (ordering key), at low priority.
            now = dt.datetime.now(dt.UTC)
            await post_alerts(am, [_alert(status_end=now - dt.timedelta(seconds=1))])
            await wait_until(
                lambda: messages("resolved"), timeout=30, what="the resolved alert delivered"
            )
            order = [
                json.loads(r.body)["status"]
                for r in receiver.received
                if 200 <= r.answer.status < 300
            ]
            assert order == ["firing", "resolved"]
            jobs = await running.queue.jobs.list(target="default/oncall")
            assert sorted(j.priority.value for j in jobs) == ["high", "low"]
