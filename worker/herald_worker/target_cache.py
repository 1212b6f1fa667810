"""The worker's view of its targets: registry rows (configuration and shared state) joined
with their Secrets and their type. Refreshed on registry notifications and on an interval,
so spec and Secret changes apply without a restart."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping

from herald_delivery import target_types
from herald_delivery.target_types.base import TargetType
from herald_model.target_spec import PublishingTarget
from herald_queue.records import TargetRow
from herald_queue.registry import TargetRegistry
from herald_worker.secrets import SecretSource

log = logging.getLogger("herald.targets")


@dataclasses.dataclass(frozen=True)
class RuntimeTarget:
    row: TargetRow
    kind: TargetType
    secrets: Mapping[str, str]
    problem: str | None
    """Why it cannot be delivered to now (a missing Secret key...), or None."""

    @functools.cached_property
    def ref(self) -> str:
        return self.row.ref

    @functools.cached_property
    def target(self) -> PublishingTarget:
        """Built once (every delivery renders with it); a refresh makes a new RuntimeTarget."""
        return PublishingTarget(
            namespace=self.row.namespace,
            name=self.row.name,
            spec=self.row.spec,
            generation=self.row.generation,
        )


class TargetDirectory:
    def __init__(self, registry: TargetRegistry, secrets: SecretSource) -> None:
        self._registry = registry
        self._secrets = secrets
        self._targets: dict[int, RuntimeTarget] = {}

    async def refresh(self) -> None:
        rows = await self._registry.list()
        targets: dict[int, RuntimeTarget] = {}
        for row in rows:
            kind = target_types.get(row.type)
            secrets: Mapping[str, str] = {}
            problems: list[str] = []
            if row.spec.secret_name:
                lookup = await self._secrets.get(row.namespace, row.spec.secret_name)
                if lookup.data is None:
                    problems.append(lookup.problem or "its Secret cannot be read")
                else:
                    secrets = lookup.data
            problems += kind.check(row.spec, secrets if not problems else None)
            problem = "; ".join(problems) or None
            previous = self._targets.get(row.id)
            if problem and (previous is None or previous.problem != problem):
                log.warning(
                    "target cannot be delivered to",
                    extra={"action": "check-target", "target": row.ref, "problem": problem},
                )
            targets[row.id] = RuntimeTarget(row=row, kind=kind, secrets=secrets, problem=problem)
        self._targets = targets

    def get(self, target_id: int) -> RuntimeTarget | None:
        return self._targets.get(target_id)

    def find(self, namespace: str, name: str) -> RuntimeTarget | None:
        for target in self._targets.values():
            if target.row.namespace == namespace and target.row.name == name:
                return target
        return None

    def all(self) -> list[RuntimeTarget]:
        return list(self._targets.values())
