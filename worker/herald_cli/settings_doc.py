"""The configuration tables of the README, generated from the settings classes (a test keeps
the README in step: `python -m herald_cli.settings_doc` prints them)."""

from __future__ import annotations

import importlib
from typing import Any

from herald_queue import config

# (section title, module, class)
SECTIONS = [
    ("Database (every process)", "herald_queue.settings", "DatabaseSettings"),
    ("Queue (every process)", "herald_queue.settings", "QueueSettings"),
    (
        "Egress (`herald worker`, `herald operator`, `herald targets apply`)",
        "herald_queue.settings",
        "EgressSettings",
    ),
    ("Worker (`herald worker`)", "herald_worker.settings", "WorkerSettings"),
    ("Operator (`herald operator`)", "herald_operator.settings", "OperatorSettings"),
]


def _default(value: Any, type_name: str) -> str:
    if type_name == "duration" and isinstance(value, int | float):
        return f"`{config.format_duration(value)}`"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return "(see description)"
    return f"`{value}`"


def tables() -> str:
    parts = []
    for title, module, name in SECTIONS:
        cls = getattr(importlib.import_module(module), name)
        parts.append(f"#### {title}\n")
        parts.append("| variable | default | meaning |")
        parts.append("|---|---|---|")
        for info in config.describe(cls):
            doc = info.doc + (" Secret: never logged." if info.secret else "")
            parts.append(f"| `{info.env}` | {_default(info.default, info.type_name)} | {doc} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(tables(), end="")
