"""``herald operator`` as the chart runs it: a process configured from the environment,
logging in with a kubeconfig (kopf's default login through the kubernetes client), and
stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "tester", "namespace": "default"},
                    }
                ],
                "current-context": "kmock",
            }
        )
    )
    return path


@pytest.mark.slow
async def test_a_database_without_herald_schema_is_one_clear_error(
    fresh_db: Any, tmp_path: Path
) -> None:
    url = await fresh_db(None)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "KUBERNETES_"))},
        "HERALD_DATABASE_URL": url,
        "KUBECONFIG": str(tmp_path / "absent"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_tools.cli.main",
        "operator",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("herald: error: database schema is at version 0")
    assert "herald migrate" in last
