"""Named SQL, loaded once from the ``.sql`` files beside this module.

A file holds blocks that each start with ``-- name: NAME``; comments after the name line
document the block and stay in the text PostgreSQL receives. A block may include another
block of the same file with ``{{name}}`` (a shared fragment, e.g. CTEs used by two
statements), resolved once at load time. Queries are ``bytes``, which psycopg takes as a
query without string formatting.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"\{\{([a-z_]+)\}\}")


@functools.cache
def load(concern: str) -> dict[str, bytes]:
    """All named queries of ``<concern>.sql``."""
    text = resources.files(__package__).joinpath(f"{concern}.sql").read_text("utf-8")
    parts = _NAME.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in blocks:
            raise ValueError(f"{concern}.sql defines {name!r} twice")
        blocks[name] = body.strip().rstrip(";")

    def expand(name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise ValueError(f"{concern}.sql: {name!r} includes itself")
        if name not in blocks:
            raise ValueError(f"{concern}.sql: {seen[-1]!r} includes unknown block {name!r}")
        return _INCLUDE.sub(lambda m: _strip_comments(expand(m[1], (*seen, name))), blocks[name])

    return {name: expand(name, ()).encode() for name in blocks}


def _strip_comments(block: str) -> str:
    """An included block without its leading comment lines."""
    lines = block.splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines)


def query(concern: str, name: str) -> bytes:
    try:
        return load(concern)[name]
    except KeyError:
        raise KeyError(f"no query {name!r} in {concern}.sql") from None


def schema() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text("utf-8")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every numbered migration, in order."""
    found = []
    folder = resources.files(__package__).joinpath("migrations")
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    # Numbers are handed out per change in flight, so one may land before a lower one:
    # each number once, from 0001 up (a database records every version it has).
    if len(set(versions)) != len(versions) or (versions and versions[0] < 1):
        raise ValueError(f"migrations must be numbered 0001, 0002, ..., each once: {versions}")
    return found
