"""The configuration tables of docs/configuration.md, generated from the settings classes (a
test keeps the page in step: `python -m herald_tools.cli.settings_doc` prints them)."""

from __future__ import annotations

from typing import Any

from herald_core.durations import format_duration
from herald_core.settings import HeraldSettings, LogSettings, describe
from herald_delivery.settings import EgressSettings
from herald_operator.settings import OperatorSettings
from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_worker.settings import WorkerSettings

CLASSES: tuple[type[HeraldSettings], ...] = (
    DatabaseSettings,
    QueueSettings,
    EgressSettings,
    LogSettings,
    WorkerSettings,
    OperatorSettings,
)


def _default(value: Any, kind: str) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind.startswith("duration") and isinstance(value, int | float):
        return f"`{format_duration(value)}`"
    if value == "":
        return "(see description)"
    return f"`{value}`"


def tables() -> str:
    parts = []
    for cls in CLASSES:
        parts.append(f"## {cls.section}\n")
        parts.append("| variable | type | default | meaning |")
        parts.append("|---|---|---|---|")
        for name, info in cls.model_fields.items():
            kind = describe(info).name
            doc = (info.description or "") + (" Secret: never logged." if cls.secret(name) else "")
            default = _default(info.default, kind)
            parts.append(f"| `{cls.env_name(name)}` | {kind} | {default} | {doc} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(tables(), end="")
