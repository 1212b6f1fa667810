"""Real Prometheus and Alertmanager processes for the end-to-end tests, on 127.0.0.1, in a
temporary directory, stopped by the fixture that started them."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.helpers import free_port, wait_until


@contextlib.asynccontextmanager
async def running(args: Sequence[str], ready_url: str, log: Path) -> AsyncIterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT)
        try:

            async def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{args[0]} exited: {log.read_text()[-2000:]}")
                try:
                    async with aiohttp.ClientSession() as http, http.get(ready_url) as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up, timeout=30, what=f"{args[0]} ready")
            yield
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.asynccontextmanager
async def prometheus(binary: str, folder: Path, jobs: dict[str, list[str]]) -> AsyncIterator[str]:
    """Prometheus scraping ``jobs`` (job name -> host:port targets) every second, the way
    the chart's ServiceMonitor configures it (path /metrics, honorLabels false)."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": name,
                "metrics_path": "/metrics",
                "scrape_interval": "1s",
                "static_configs": [{"targets": targets}],
            }
            for name, targets in jobs.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    async with running(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        f"{base}/-/ready",
        folder / "prometheus.log",
    ):
        yield base


async def query(base: str, promql: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/query", params={"query": promql}) as r,
    ):
        body = await r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def metric_names(base: str) -> set[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/label/__name__/values") as r,
    ):
        return set((await r.json())["data"])


@contextlib.asynccontextmanager
async def alertmanager(
    binary: str,
    folder: Path,
    webhook_url: str,
    token: str | None = None,
) -> AsyncIterator[str]:
    """Alertmanager routing every alert to ``webhook_url`` (Herald's receiver), grouping by
    alertname, fast timers, and re-sending a group every 2 s (repeat_interval) so a test
    can see that a re-sent group does not duplicate."""
    port = free_port()
    cluster_port = free_port()
    webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
    if token:
        webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
    config = {
        "route": {
            "receiver": "herald",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "2s",
        },
        "receivers": [{"name": "herald", "webhook_configs": [webhook]}],
    }
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{port}"
    async with running(
        [
            binary,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=127.0.0.1:{cluster_port}",
        ],
        f"{base}/-/ready",
        folder / "alertmanager.log",
    ):
        yield base


async def post_alerts(base: str, alerts: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/api/v2/alerts", json=alerts) as r,
    ):
        assert r.status == 200, await r.text()
