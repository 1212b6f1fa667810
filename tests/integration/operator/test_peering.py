"""Peering: with HERALD_PEERING set, only the replica with the highest priority acts, kopf's
handlers and Herald's own worker scaler alike; a standby takes over when it is gone."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from tests.helpers import wait_until
from tests.integration.operator.cluster import (
    NS,
    PT,
    PT_URL,
    Emulator,
    StartOperator,
    condition,
    create,
    target,
)


def peering(**peers: int) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {
            "name": "herald",
            "namespace": NS,
            "uid": "peering-uid",
            "resourceVersion": "1",
        },
        "status": {
            name: {"priority": priority, "lifetime": 60, "lastseen": now}
            for name, priority in peers.items()
        },
    }


@pytest.mark.slow
async def test_without_the_peering_object_no_replica_acts_and_the_log_says_why(
    k8s: Emulator, start_operator: StartOperator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="herald.operator")
    await start_operator(peering="herald", wait_watching=False)
    await create(k8s, PT_URL, target("hook"))
    record = await wait_until(
        lambda: next((r for r in caplog.records if "does not exist" in r.getMessage()), None)
    )
    assert "KopfPeering object herald" in record.getMessage()
    assert "HERALD_PEERING=" in record.getMessage()
    assert not condition(k8s, PT, "hook")
