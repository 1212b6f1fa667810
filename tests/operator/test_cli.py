"""``herald operator`` as the chart runs it: a process configured from the environment,
logging in with a kubeconfig (kopf's default login through the kubernetes client), and
stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import LOCAL_EGRESS_ENV
from tests.operator.cluster import PT_URL, Emulator, create, free_port, target, wait_ready


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


async def test_herald_operator_runs_from_the_environment_and_stops_on_sigterm(
    k8s: Emulator, db_url: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "KUBERNETES_"))},
        "KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig", str(k8s.url).rstrip("/"))),
        "HERALD_DATABASE_URL": db_url,
        "POD_NAMESPACE": "default",
        "HERALD_PEERING": "",
        "HERALD_SCALING": "false",
        "HERALD_STATUS_INTERVAL": "300ms",
        "HERALD_OPERATOR_METRICS_PORT": str(free_port()),
        "HERALD_OPERATOR_HEALTH_PORT": str(free_port()),
        "HERALD_LOG_FORMAT": "json",
        **LOCAL_EGRESS_ENV,  # the target points at 127.0.0.1
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_cli.main",
        "operator",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await create(k8s, PT_URL, target("from-cli"))
        await wait_ready(k8s, "from-cli", timeout=30)
        # The operator's own API client (Secrets, /status, /scale) uses kopf's login too.
        await create(k8s, PT_URL, target("with-secret", secretRef={"name": "absent"}))
        missing = await wait_ready(k8s, "with-secret", "False", timeout=10)
        assert missing["reason"] == "SecretNotFound"
        secret_reads = [
            r for r in list(k8s) if r.resource is not None and r.resource.plural == "secrets"
        ]
        assert secret_reads and all(
            r.headers.get("Authorization") == "Bearer test-token" for r in secret_reads
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-3000:]
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    messages = [line.get("message") for line in lines]
    assert "operator started" in messages and "operator stopped" in messages


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
        "herald_cli.main",
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
