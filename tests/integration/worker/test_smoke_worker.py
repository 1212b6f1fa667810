from __future__ import annotations

from pathlib import Path

import aiohttp
import yaml

from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_tools.receiver import Receiver
from herald_worker.process import Options, start
from herald_worker.settings import WorkerSettings
from tests.helpers import LOCAL_EGRESS, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_worker_delivers_signed_webhooks(db_url: str, tmp_path: Path) -> None:
    async with Receiver(secret=SECRET) as receiver:
        manifest = tmp_path / "targets.yaml"
        manifest.write_text(
            yaml.safe_dump_all(
                [
                    {
                        "apiVersion": "herald.dev/v1alpha1",
                        "kind": "PublishingTarget",
                        "metadata": {"name": "hook", "namespace": "default"},
                        "spec": {
                            "type": "webhook",
                            "url": receiver.url,
                            "secretRef": {"name": "hook"},
                        },
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "hook"},
                        "stringData": {"signingSecret": SECRET},
                    },
                ]
            )
        )
        async with start(
            Options(targets=manifest),
            worker_settings=WorkerSettings(
                http_host="127.0.0.1", http_port=0, kubernetes_secrets=False
            ),
            db_settings=DatabaseSettings(pool_min=1, pool_max=8),
            queue_settings=QueueSettings(),
            egress_settings=LOCAL_EGRESS,
            url=db_url,
        ) as (running, _stop, task):
            base = f"http://127.0.0.1:{running.port}"
            async with aiohttp.ClientSession() as http:
                r = await http.post(f"{base}/v1/jobs", json={"target": "hook", "payload": {"a": 1}})
                assert r.status == 201, await r.text()
                job = await r.json()
                await wait_until(lambda: receiver.delivered_ids() == [job["id"]])
                assert receiver.received[0].signature_ok
                r = await http.get(f"{base}/v1/jobs/{job['id']}")
                body = await r.json()
                assert body["state"] in ("succeeded", "running"), body
                await wait_until(lambda: running.health.ready)
                r = await http.get(f"{base}/readyz")
                assert r.status == 200, await r.text()
                r = await http.get(f"{base}/metrics")
                text = await r.text()
                assert "herald_jobs_delivered_total" in text
            assert not task.done()
