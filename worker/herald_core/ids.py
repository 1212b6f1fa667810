"""Job ids: UUIDv7 (RFC 9562), time-ordered so the primary key index stays append-mostly.

Ids made by one process are strictly increasing (a 12-bit counter fills ``rand_a`` within a
millisecond, borrowing the next millisecond when it runs out), which keeps the jobs of one
batch in the order they were given. The other 62 bits come from ``os.urandom``, so
processes (forked ones included) never collide.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
"""An id as JSON Schema's "uuid" format has it (and the API takes it): 8-4-4-4-12
hexadecimal digits, nothing around them."""
_UUID = re.compile(UUID_PATTERN)


def parse_uuid(value: str) -> uuid.UUID | None:
    """``value`` as a UUID if it is written as :data:`UUID_PATTERN` says, else None."""
    return uuid.UUID(value) if _UUID.match(value) else None


_lock = threading.Lock()
_last_ms = 0
_counter = 0
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)
_RAND_MASK = (1 << 62) - 1


def _reserve(n: int) -> list[tuple[int, int]]:
    """(millisecond, counter) for ``n`` ids, strictly increasing."""
    global _last_ms, _counter
    out = []
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # room to count up
        else:
            _counter += 1
        for _ in range(n):
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            out.append((_last_ms, _counter))
            _counter += 1
        _counter -= 1
    return out


def uuid7_ints(n: int) -> list[int]:
    """``n`` UUIDv7 values as 128-bit integers (``uuid.UUID(int=...)`` or ``f"{v:032x}"``)."""
    rand = os.urandom(8 * n)
    return [
        (ms << 80)
        | (counter << 64)
        | _VERSION_VARIANT
        | (int.from_bytes(rand[8 * i : 8 * i + 8], "big") & _RAND_MASK)
        for i, (ms, counter) in enumerate(_reserve(n))
    ]


def uuid7() -> uuid.UUID:
    return uuid.UUID(int=uuid7_ints(1)[0])
