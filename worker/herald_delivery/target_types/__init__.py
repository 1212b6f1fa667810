"""Publishing target types: what each ``spec.type`` needs of its configuration and how it
turns a job into an HTTP request. Pure code: the worker sends, retries and classifies.

Adding a type means adding a module with a :class:`TargetType` subclass and registering
its instance in ``TYPES`` below.
"""

from __future__ import annotations

from herald_core.errors import InvalidTarget
from herald_delivery.target_types.base import (
    InvalidPayload,
    OutgoingRequest,
    RenderContext,
    TargetType,
)
from herald_delivery.target_types.pagerduty import PAGERDUTY
from herald_delivery.target_types.slack import SLACK
from herald_delivery.target_types.webhook import WEBHOOK

TYPES: dict[str, TargetType] = {t.name: t for t in (WEBHOOK, SLACK, PAGERDUTY)}


def get(name: str) -> TargetType:
    """The type named ``name``; :class:`InvalidTarget` naming the known ones otherwise."""
    try:
        return TYPES[name]
    except KeyError:
        raise InvalidTarget(
            f"unknown target type {name!r}: known types are {', '.join(sorted(TYPES))}"
        ) from None


__all__ = [
    "TYPES",
    "InvalidPayload",
    "OutgoingRequest",
    "RenderContext",
    "TargetType",
    "get",
]
