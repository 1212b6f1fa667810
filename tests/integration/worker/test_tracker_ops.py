"""The LRU tracker's operations where a user reaches them: ``GET /v1/tracker`` (recent
jobs, most recently updated first, filtered) and ``DELETE /v1/tracker`` (clear), and the
CLI's ``herald tracker list|clear`` against a running worker; listed and cleared over and
over while deliveries record into it, without an error, a malformed answer or a lost job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from herald_core.states import JobState
from herald_worker.tracker import Snapshot, Tracker
from tests.integration.cli.cli import herald
from tests.integration.worker.harness import (
    TrackingReceiver,
    Worker,
    free_port,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
TOKEN = "tr4cker-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_recent_is_newest_first_filtered_and_clear_empties() -> None:
    tracker = Tracker(100)
    for i, (target, state) in enumerate(
        [
            ("default/hook", JobState.SUCCEEDED),
            ("team/hook", JobState.QUEUED),
            ("default/other", JobState.SUCCEEDED),
            ("default/hook", JobState.RETRYING),
        ]
    ):
        at = T0 + dt.timedelta(seconds=i)
        tracker.record(Snapshot(uuid.uuid4(), target, "high", state, 1, at, at))
    newest = tracker.recent(10)
    assert [s.updated_at for s in newest] == sorted((s.updated_at for s in newest), reverse=True)
    assert len(tracker.recent(2)) == 2
    assert {s.target for s in tracker.recent(10, target="hook")} == {"default/hook", "team/hook"}
    assert [s.target for s in tracker.recent(10, target="team/hook")] == ["team/hook"]
    assert [s.state for s in tracker.recent(10, state=JobState.SUCCEEDED)] == [
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]
    assert tracker.clear() == 4
    assert len(tracker) == 0 and tracker.recent(10) == []


async def get_tracker(w: Worker, query: str = "") -> dict[str, Any]:
    async with w.http.get(f"{w.base}/v1/tracker{query}", headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


def assert_well_formed(body: dict[str, Any], limit: int) -> None:
    assert 0 <= body["size"] <= body["capacity"]
    items = body["items"]
    assert len(items) <= limit
    stamps = [i["updatedAt"] for i in items]
    assert stamps == sorted(stamps, reverse=True), "most recently updated first"
    assert len({i["id"] for i in items}) == len(items), "no job twice"
    assert all(i["source"] == "tracker" for i in items)


@pytest.mark.slow
async def test_list_and_clear_while_deliveries_record(db_url: str, tmp_path: Path) -> None:
    n = 400
    async with TrackingReceiver() as rx:
        path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", rx.url)])
        async with worker(db_url, path, api_token=TOKEN, tracker_size=1000) as w:
            w.http.headers.update(AUTH)
            done = asyncio.Event()
            lists = clears = 0
            cleared = 0

            async def hammer() -> None:
                nonlocal lists, clears, cleared
                while not done.is_set():
                    assert_well_formed(await get_tracker(w, "?limit=50"), 50)
                    lists += 1
                    async with w.http.delete(f"{w.base}/v1/tracker") as r:
                        assert r.status == 200
                        cleared += (await r.json())["cleared"]
                    clears += 1
                    assert_well_formed(await get_tracker(w, "?state=succeeded&limit=1000"), 1000)
                    lists += 1

            hammers = [asyncio.create_task(hammer()) for _ in range(3)]
            ids = await w.submit_many("hook", [{"n": i} for i in range(n)])
            await wait_state(w.queue, "succeeded", n, timeout=60)
            done.set()
            await asyncio.gather(*hammers)
            assert lists >= 6 and clears >= 3, (lists, clears)
            assert cleared > 0, "clears found jobs to forget"
            assert sorted(rx.counts()) == sorted(ids), "every job delivered, once or more"

            # After a clear, a lookup reads the database; a new job is tracked again.
            async with w.http.delete(f"{w.base}/v1/tracker") as r:
                assert r.status == 200
            assert (await get_tracker(w))["size"] == 0
            async with w.http.get(f"{w.base}/v1/jobs/{ids[0]}") as r:
                body = await r.json()
                assert (body["state"], body["source"]) == ("succeeded", "database")
            new = (await w.submit("hook", {"n": "new"}))["id"]
            await wait_state(w.queue, "succeeded", n + 1)
            listed = await get_tracker(w, "?target=default/hook&state=succeeded")
            assert [i["id"] for i in listed["items"]] == [new]

            # The CLI, as a user runs it against the worker.
            env = {"HERALD_API_TOKEN": TOKEN}
            out = await herald("tracker", "list", "--worker", w.base, "--json", url=None, env=env)
            assert out.code == 0, out.err
            assert [i["id"] for i in out.json()["items"]] == [new]
            table = await herald("tracker", "list", "--worker", w.base, url=None, env=env)
            assert new in table.out and "succeeded" in table.out
            clear = await herald("tracker", "clear", "--worker", w.base, url=None, env=env)
            assert clear.out.strip() == f"cleared 1 jobs from the tracker of {w.base}"
            empty = await herald("tracker", "list", "--worker", w.base, url=None, env=env)
            assert empty.out.strip() == "the tracker holds no job (size 0 of 1000)"
            refused = await herald("tracker", "list", "--worker", w.base, url=None)
            assert "answered 401: missing or wrong bearer token" in refused.error
            bad = await herald(
                "tracker", "list", "--worker", w.base, "--limit", "0", url=None, env=env
            )
            assert "answered 400: limit: must be at least 1, got 0" in bad.error
            nobody = f"http://127.0.0.1:{free_port()}"
            away = await herald("tracker", "clear", "--worker", nobody, url=None, env=env)
            assert f"cannot reach the worker at {nobody}" in away.error
