"""The egress policy where the worker connects: a host that resolves to an address the
policy refuses is never connected to, whatever the URL says; the delivery is permanent, its
dead letter names the policy and the setting, and the receiver sees nothing. Loopback is
refused unless allowed (every other worker suite allows it explicitly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald_core.errors import InvalidTarget
from herald_delivery.settings import EgressSettings
from tests.helpers import register, sql_rows, wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    TrackingReceiver,
    secret_doc,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

RETRY = {"retry": {"maxAttempts": 5, **FAST_RETRY}}


async def test_a_host_resolving_to_loopback_is_refused_at_connect_time(
    db_url: str, tmp_path: Path
) -> None:
    """``localhost`` is a name (accepted when the target is applied), but it resolves to
    127.0.0.1 / ::1; "literal" names 127.0.0.1 and was registered by someone whose policy
    allowed it (an operator with other settings). With loopback not allowed, neither is
    connected to."""
    async with TrackingReceiver() as rx:
        port = rx.url.rsplit(":", 1)[1].split("/")[0]
        path = write_manifests(
            tmp_path / "targets.yaml",
            [target_doc("by-name", f"http://localhost:{port}/hook", **RETRY)],
        )
        async with worker(db_url, path, egress_settings=EgressSettings()) as w:
            await register(w.queue, "literal", url=rx.url, **RETRY)
            directory = w.running.maintenance.directory
            await wait_until(
                lambda: any(t.ref == "default/literal" for t in directory.all()),
                what="the worker knows the new target",
            )
            by_name = (await w.submit("by-name", {"a": 1}))["id"]
            literal = (await w.submit("literal", {"a": 2}))["id"]
            await wait_state(w.queue, "dead", 2)
            assert rx.received == [], "nothing reached the receiver"
            status, page = await w.get("/v1/dead-letters")
            assert status == 200
            entries = {i["jobId"]: i for i in page["items"]}
            for job_id, host in ((by_name, "localhost"), (literal, "127.0.0.1")):
                entry = entries[job_id]
                assert (entry["errorClass"], entry["reason"], entry["attempts"]) == (
                    "permanent",
                    "permanent-error",
                    1,
                ), entry
                assert entry["error"].startswith(f"not delivered to {host}: the egress policy "), (
                    entry
                )
                assert "loopback" in entry["error"]
                assert "HERALD_EGRESS_ALLOW_LOOPBACK=true" in entry["error"], entry
            # The target's status shows it too (its last error).
            rows = await sql_rows(
                w.queue, "SELECT name, last_error, consecutive_failures FROM herald.targets"
            )
            for row in rows:
                assert "egress policy refuses" in row["last_error"], row
                assert row["consecutive_failures"] == 0, "a refusal does not open the circuit"


async def test_a_secret_url_the_policy_refuses_is_refused_at_start_without_its_value(
    db_url: str, tmp_path: Path
) -> None:
    path = write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc("by-secret", None, secretRef={"name": "s"}),
            secret_doc("s", url="http://user:SECRETPART@169.254.169.254/latest/"),
        ],
    )
    with pytest.raises(InvalidTarget) as caught:
        async with worker(db_url, path, egress_settings=EgressSettings()):
            pass
    message = str(caught.value)
    assert "Secret default/s key url names an address the egress policy refuses" in message
    assert "SECRETPART" not in message and "169.254" not in message


async def test_the_same_target_is_delivered_to_once_loopback_is_allowed(
    db_url: str, tmp_path: Path
) -> None:
    async with TrackingReceiver() as rx:
        port = rx.url.rsplit(":", 1)[1].split("/")[0]
        path = write_manifests(
            tmp_path / "targets.yaml", [target_doc("by-name", f"http://localhost:{port}/hook")]
        )
        allowed = EgressSettings(allow_loopback=True)
        async with worker(db_url, path, egress_settings=allowed) as w:
            await w.submit("by-name", {"a": 1})
            await wait_state(w.queue, "succeeded", 1)
            assert len(rx.received) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://0xa9fea9fe/",
        "http://2852039166/",
        "http://127.0.0.1:9/hook",
    ],
)
async def test_herald_worker_targets_refuses_a_literal_address_at_start(
    url: str, db_url: str, tmp_path: Path
) -> None:
    path = write_manifests(tmp_path / "targets.yaml", [target_doc("meta", url)])
    with pytest.raises(InvalidTarget, match=r"spec\.url: the egress policy refuses"):
        async with worker(db_url, path, egress_settings=EgressSettings()):
            pass
