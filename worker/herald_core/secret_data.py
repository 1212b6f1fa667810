"""A Kubernetes Secret's ``data`` (base64 values) as text: one decoder for the manifests
given to the CLI and the worker, the worker's Kubernetes API reads and the operator's."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any


def decode_secret_data(data: Mapping[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """The values of ``data`` that are base64 of UTF-8 text, decoded, and the keys (in
    order) of those that are not; each caller decides what a bad key means."""
    decoded: dict[str, str] = {}
    undecodable: list[str] = []
    for key, value in (data or {}).items():
        try:
            if not isinstance(value, str | None):
                raise ValueError(key)  # never its Python text
            decoded[str(key)] = base64.b64decode(value or "", validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            undecodable.append(str(key))
    return decoded, undecodable
