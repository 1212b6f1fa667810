"""How deeply a JSON text nests, read from the text itself (nothing is decoded or
reformatted: payloads are kept byte for byte), and a stored payload as a reader shows it.

Python decodes and encodes JSON recursively, one stack frame per level: a document nested
near a thousand deep fails with RecursionError wherever it is decoded, hashed or
serialised. Payloads are therefore refused past ``HERALD_MAX_PAYLOAD_DEPTH`` where they
enter, and a stored payload deeper than :data:`MAX_DEPTH_CEILING` (a row written before
the limit, or by hand) is shown as its text instead of being decoded.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

DEFAULT_MAX_DEPTH = 64
"""HERALD_MAX_PAYLOAD_DEPTH's default."""
MAX_DEPTH_CEILING = 512
"""The largest HERALD_MAX_PAYLOAD_DEPTH, and the deepest stored payload a read decodes:
well inside Python's recursion limit (1000 frames, shared with the server's own stack)."""

# A JSON string, escapes included ("a\"]" is one string). An unterminated one runs to the
# end of the text, as the decoder reads it: so every quote starts a match and the scan
# stays linear (a pattern that must find the closing quote retries from every quote of an
# unterminated string: quadratic, seconds for a request of 40 KB).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects in ``text``: 0 for a scalar, 1 for ``[]``
    or ``{"a": 1}``, 2 for ``[[1]]``. Brackets inside strings do not count. Linear in the
    text, without recursion; for text that is not JSON the answer is a bound only."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def deeper_than(text: str | bytes, limit: int) -> int | None:
    """``text``'s depth when it exceeds ``limit``, else None. A text with no more opening
    brackets than ``limit`` cannot exceed it: answered without a scan (the common case)."""
    if isinstance(text, bytes):
        opening = text.count(b"[") + text.count(b"{")
    else:
        opening = text.count("[") + text.count("{")
    if opening <= limit:
        return None
    depth = json_depth(text)
    return depth if depth > limit else None


def too_deep(depth: int, limit: int) -> str:
    """The words of a refusal (the problem of an ``InvalidRequest``)."""
    return (
        f"is nested {depth} levels deep (arrays and objects), more than the limit of {limit} "
        "(HERALD_MAX_PAYLOAD_DEPTH)"
    )


def shown_payload(text: str | None) -> dict[str, Any]:
    """A stored payload's fields in a job or dead letter as the API and the CLI show it:
    ``{"payload": value}``; or, when the text cannot be decoded safely (nested deeper than
    :data:`MAX_DEPTH_CEILING`, or not JSON), ``{"payload": None, "payloadText": text,
    "payloadNote": why}``: the row is still shown, honestly, and never breaks a read."""
    if text is None:
        return {"payload": None}
    depth = deeper_than(text, MAX_DEPTH_CEILING)
    if depth is not None:
        why = (
            f"the payload is nested {depth} levels deep, more than the {MAX_DEPTH_CEILING} "
            "a read decodes (it was stored before HERALD_MAX_PAYLOAD_DEPTH refused it): "
            "payloadText holds its JSON text as stored"
        )
        return {"payload": None, "payloadText": text, "payloadNote": why}
    try:
        return {"payload": json.loads(text)}
    except (ValueError, RecursionError) as exc:
        why = f"the payload could not be decoded ({type(exc).__name__}): payloadText holds it"
        return {"payload": None, "payloadText": text, "payloadNote": why}
