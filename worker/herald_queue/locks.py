"""Every PostgreSQL advisory lock Herald takes, defined here and nowhere else.

Session locks with a fixed key are numbered inside one 64-bit space that starts with
"herald" in ASCII: ``PREFIX | n``, one ``n`` per lock, so two of them can never share a key
(a test checks it). Two of them once did, by accident: the waker's lock and the
migration lock were the same number, so every ``herald migrate`` (and every CLI command on
the embedded database, which migrates first) waited forever beside a running worker.
Neither fixed key is the old shared value (``LEGACY_KEY``), so a worker and a ``herald
migrate`` of different versions, side by side during a rolling upgrade, do not block each
other either.

Transaction locks on ordering-key chains and idempotency keys are keyed by
``hashtextextended(key, seed)`` in SQL (``jobs.sql``), one seed per kind (``CHAIN_SEED``,
``IDEMPOTENCY_SEED``); those hashes are 64-bit, so meeting a fixed key is a 2^-64 chance
(meeting the waker's, which a worker holds for its whole life, would hold that chain's
submissions until the statement's lock_timeout, HERALD_DB_LOCK_TIMEOUT).

Lock order, everywhere: chain locks, then idempotency-key locks, then rows. A transaction
that changes jobs of a chain takes the chain's lock before it touches a job row, so it can
never hold a row that an enqueue (which holds the chain lock) is waiting for.
"""

from __future__ import annotations

import enum

PREFIX = int.from_bytes(b"herald", "big") << 16
"""0x6865_7261_6C64_0000: the fixed keys are PREFIX | n."""
LEGACY_KEY = int.from_bytes(b"herald", "big")
"""0x6865_7261_6C64: the key the waker and the migrations shared before they were
separated; no lock uses it any more."""


class SessionLock(enum.IntEnum):
    """Session advisory locks with a fixed key: what each one serialises."""

    MIGRATION = PREFIX | 1
    """``herald migrate``: one migrator at a time per database."""
    WAKER = PREFIX | 2
    """The waker: the one worker process whose listener hears ``herald_jobs``."""


CHAIN_SEED = 7078
"""Seed of ``hashtextextended`` for ordering-key chain locks (``lock_chains``)."""
IDEMPOTENCY_SEED = 7079
"""Seed of ``hashtextextended`` for idempotency-key locks (``lock_idempotency_keys``)."""
