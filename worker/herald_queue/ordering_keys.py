"""Ordering-key chains: only the oldest unfinished job of a (target, ordering key) may run.

Every transaction that adds to a chain or finishes its head calls :func:`settle` before
committing: it takes the chains' advisory locks (sorted, so never a deadlock) and, in a
statement that therefore sees every earlier change to those chains, holds all but the head.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from herald_queue import locks, sql
from herald_queue.db import AsyncConn

JOBS_SQL = sql.load("jobs")


def _params(chains: Iterable[tuple[int, str | None]]) -> dict[str, Any] | None:
    unique = sorted({(t, k) for t, k in chains if k is not None})
    if not unique:
        return None
    return {
        "target_ids": [t for t, _ in unique],
        "keys": [k for _, k in unique],
        "seed": locks.CHAIN_SEED,
    }


async def lock(conn: AsyncConn, chains: Iterable[tuple[int, str | None]]) -> None:
    """Take the chains' advisory locks (sorted); ``conn`` is in a transaction. Taking them
    before inserting keeps a chain's seq in the order its jobs commit."""
    params = _params(chains)
    if params is not None:
        await conn.execute(JOBS_SQL["lock_chains"], params)


async def settle(conn: AsyncConn, chains: Iterable[tuple[int, str | None]]) -> None:
    """Lock and normalize the given (target_id, ordering_key) chains (entries without a key
    are ignored); ``conn`` is in a transaction. Locks already held are simply held again."""
    params = _params(chains)
    if params is None:
        return
    await conn.execute(JOBS_SQL["lock_chains"], params)
    await conn.execute(JOBS_SQL["normalize_chains"], params)
