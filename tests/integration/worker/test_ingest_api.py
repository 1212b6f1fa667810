"""POST /v1/jobs of one job goes through the group commit (herald_queue.group_commit):
concurrent submissions share transactions, each answered for itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from herald_queue.settings import QueueSettings
from tests.helpers import sql_value
from tests.integration.worker.harness import target_doc, worker, write_manifests


async def test_concurrent_posts_one_reused_key_is_409_the_others_201(
    db_url: str, tmp_path: Path
) -> None:
    manifests = write_manifests(
        tmp_path / "targets.yaml", [target_doc("held", "http://127.0.0.1:9/", paused=True)]
    )
    settings = QueueSettings(ingest_groups_in_flight=1)
    async with worker(db_url, manifests, queue_settings=settings) as w:
        first = await w.submit("held", {"v": 1}, idempotencyKey="k")

        async def post(body: dict[str, object]) -> tuple[int, object]:
            return await w.post("/v1/jobs", json=body)

        bodies: list[dict[str, object]] = [
            {"target": "held", "payload": {"n": n}} for n in range(30)
        ]
        bodies[10] = {"target": "held", "payload": {"v": 2}, "idempotencyKey": "k"}
        bodies[20] = {"target": "held", "payload": {"v": 1}, "idempotencyKey": "k"}
        answers = await asyncio.gather(*(post(b) for b in bodies))

        status, body = answers[10]
        assert status == 409, body
        assert isinstance(body, dict) and body["error"]["status"] == 409
        status, body = answers[20]
        assert status == 200 and isinstance(body, dict) and body["id"] == first["id"], body
        others = [a for i, a in enumerate(answers) if i not in (10, 20)]
        assert all(status == 201 for status, _ in others), others
        ids = {b["id"] for _, b in others if isinstance(b, dict)}
        assert len(ids) == 28
        assert await sql_value(w.queue, "SELECT count(*) FROM herald.jobs") == 29

        samples = await w.metrics()
        grouped = samples[("herald_ingest_group_size_sum", ())]
        groups = samples[("herald_ingest_group_size_count", ())]
        # Every single submission went through a group (the failed group's requests are
        # written one by one afterwards, and not counted as groups).
        assert 1 <= groups <= grouped <= 31
