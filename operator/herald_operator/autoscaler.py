"""The worker scaler's loop: every HERALD_SCALE_INTERVAL, count the jobs ready to run,
read the worker Deployment's ``/scale``, ask :class:`scaling.Scaler`, and patch ``/scale``
when the answer differs. Each change is logged and posted as an Event on the Deployment
(``kubectl describe deployment herald-worker`` shows it next to the rollout's own).

It runs in every replica but acts only in the active one (:mod:`peering`), and it never
raises: an outage (PostgreSQL, the API) costs a tick, not the loop.
"""

from __future__ import annotations

import asyncio
import logging

from herald_operator.kube import KubeError
from herald_operator.runtime import DB_ERRORS, Runtime
from herald_operator.scaling import Decision
from herald_queue import stats

log = logging.getLogger("herald.operator.scaling")
COMPONENT = "herald-operator"


class WorkerAutoscaler:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._missing_logged = False

    @property
    def _target(self) -> tuple[str, str]:
        settings = self._rt.settings
        return settings.deployment_namespace, settings.worker_deployment

    async def run(self) -> None:
        interval = float(self._rt.settings.scale_interval)
        namespace, name = self._target
        log.info(
            "scaling the worker Deployment from queue depth",
            extra={
                "action": "scale",
                "deployment": f"{namespace}/{name}",
                "policy": str(self._rt.scaler.policy),
            },
        )
        while True:  # a first pass at once: a fresh install's Deployment starts at one
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end scaling for good; it is logged
                log.exception("scaling tick failed", extra={"action": "scale"})
            await asyncio.sleep(interval)

    async def tick(self) -> Decision | None:
        rt = self._rt
        if not await rt.leadership.active():
            return None
        namespace, name = self._target
        try:
            ready = await stats.ready_for_scaling(rt.queue.pool)
        except DB_ERRORS as exc:
            log.warning(
                "cannot count ready jobs; not scaling this time",
                extra={"action": "scale", "error": str(exc)},
            )
            return None
        rt.metrics.ready_jobs.set(ready)
        try:
            scale = await rt.kube.get_scale(namespace, name)
        except KubeError as exc:
            log.warning(
                "cannot read the worker Deployment; not scaling this time",
                extra={"action": "scale", "error": str(exc)},
            )
            return None
        if scale is None:
            if not self._missing_logged:
                log.warning(
                    "the worker Deployment does not exist; nothing to scale",
                    extra={"action": "scale", "deployment": f"{namespace}/{name}"},
                )
                self._missing_logged = True
            return None
        self._missing_logged = False
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        rt.metrics.current_replicas.set(current)
        decision = rt.scaler.decide(ready, current)
        rt.metrics.recommended_replicas.set(decision.recommended)
        rt.metrics.desired_replicas.set(decision.desired)
        if not decision.changed:
            log.debug(
                "worker replicas unchanged",
                extra={"action": "scale", "replicas": current, "why": decision.reason},
            )
            return decision
        try:
            await rt.kube.patch_scale(namespace, name, decision.desired)
        except KubeError as exc:
            log.warning(
                "cannot scale the worker Deployment",
                extra={"action": "scale", "error": str(exc), "replicas": decision.desired},
            )
            return None
        rt.scaler.changed()
        rt.metrics.scalings.labels(direction=decision.direction).inc()
        rt.metrics.current_replicas.set(decision.desired)
        message = (
            f"scaled workers from {decision.current} to {decision.desired} replicas: "
            f"{decision.reason}"
        )
        log.info(
            message,
            extra={
                "action": "scale",
                "from": decision.current,
                "to": decision.desired,
                "ready": ready,
            },
        )
        metadata = scale.get("metadata") or {}
        await rt.kube.post_event(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "namespace": namespace,
                "uid": metadata.get("uid"),
            },
            type="Normal",
            reason="WorkersScaledUp" if decision.direction == "up" else "WorkersScaledDown",
            message=message,
            action="Scale",
            component=COMPONENT,
            instance=rt.options.identity,
        )
        return decision
