"""Claims commit without waiting for the disk unless HERALD_DURABLE_CLAIMS, and only
claims: the setting is local to the claim's transaction, so an enqueue on the same pooled
connection afterwards still waits for its commit to reach the disk."""

from __future__ import annotations

import pytest

from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings
from tests.conftest import queue_settings
from tests.helpers import job, register


async def _setting(queue: Queue) -> set[str]:
    """synchronous_commit on every connection of the pool."""
    seen = set()
    async with queue.pool.connection() as a, queue.pool.connection() as b:
        for conn in (a, b):
            row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert row is not None
            seen.add(str(row[0]))
    return seen


@pytest.mark.parametrize(("durable", "inside"), [(False, "off"), (True, "on")])
async def test_a_claim_commits_asynchronously_unless_durable(
    db_url: str, durable: bool, inside: str
) -> None:
    queue = await Queue.open(
        DatabaseSettings(pool_min=2, pool_max=2),
        queue_settings(durable_claims=durable),
        url=db_url,
    )
    try:
        await register(queue)
        await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(4)])
        assert await _setting(queue) == {"on"}  # the server's default
        async with queue.pool.connection() as conn, conn.transaction():
            cur = await queue.jobs._send_claim(conn, "w1", 2, {}, with_quotas=False)
            assert len(await cur.fetchall()) == 2
            row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert row is not None and row[0] == inside  # for the claim's transaction
        assert len(await queue.jobs.claim("w1", 10)) == 2  # through the public path
        assert await _setting(queue) == {"on"}  # and for nothing after it
        await queue.jobs.enqueue(job(payload={"after": True}))
        assert await _setting(queue) == {"on"}
    finally:
        await queue.close()
