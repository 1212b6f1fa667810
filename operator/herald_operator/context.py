"""One handler call on one object, typed: what kopf hands a handler (body, meta, spec,
status, patch, memo, logger, namespace, name, uid) and the operator's runtime, built once
per call by :meth:`ObjectContext.of` and passed to the handler's steps."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import kopf

from herald_operator.condition_writer import ConditionWriter
from herald_operator.conditions import Transition
from herald_operator.runtime import Runtime, object_lock, runtime_of


@dataclasses.dataclass(frozen=True)
class ObjectContext:
    rt: Runtime
    body: kopf.Body
    meta: kopf.Meta
    spec: kopf.Spec
    status: kopf.Status
    patch: kopf.Patch
    memo: kopf.Memo
    """Per object (kopf copies the operator's memo for each), kept between calls."""
    logger: kopf.Logger
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(
        cls,
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        patch: kopf.Patch,
        memo: kopf.Memo,
        logger: kopf.Logger,
        name: str,
        namespace: str | None,
        uid: str,
        **_: Any,
    ) -> ObjectContext:
        """From a handler's keyword arguments (kopf's)."""
        assert namespace is not None  # a namespaced resource
        return cls(
            runtime_of(memo), body, meta, spec, status, patch, memo, logger, namespace, name, uid
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def generation(self) -> int | None:
        return self.meta.get("generation")

    def lock(self) -> asyncio.Lock:
        """The object's lock: its change handlers and its status timer never interleave."""
        return object_lock(self.memo)

    def conditions(self) -> ConditionWriter:
        """The writer of this object's conditions for this call (the status as read now)."""
        return ConditionWriter(self.status, self.patch, self.memo, self.post)

    def post(self, event: Transition) -> None:
        """Log ``event``'s line and post it on the object."""
        if event.level >= logging.WARNING:
            self.logger.warning(event.line)
        else:
            self.logger.info(event.line)
        kopf.event(self.body, type=event.type, reason=event.reason, message=event.message)
