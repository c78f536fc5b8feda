"""kopf's watch events without managedFields (kopf_events.py), through kopf's own watcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import watching
from kopf._cogs.structs import bodies, references
from kopf._core.reactor import queueing

from zomro_backup_operator import kopf_events
from zomro_backup_operator.resources import GROUP, PLURAL, VERSION

RESOURCE = references.Resource(
    group=GROUP, version=VERSION, plural=PLURAL, kind="BackupSchedule", namespaced=True
)


def _event(uid: str) -> dict[str, Any]:
    return {
        "type": "ADDED",
        "object": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "BackupSchedule",
            "metadata": {
                "name": f"backup-{uid}",
                "namespace": "team-a",
                "uid": uid,
                "resourceVersion": "7",
                "labels": {"app": "db"},
                "annotations": {"note": "kept"},
                "finalizers": ["zomro.com/finalizer"],
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}] * 4,
            },
            "spec": {"instanceId": "5203773", "days": ["Monday"], "time": "02:01"},
            "status": {"scheduleId": "14"},
        },
    }


async def test_kopfs_watcher_hands_its_workers_objects_without_managed_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = [_event("u1"), watching.Bookmark.LISTED, _event("u2")]

    async def api_server(**_: Any) -> AsyncIterator[Any]:
        for event in sent:
            yield event
        await asyncio.Event().wait()  # the watch stays open

    monkeypatch.setattr(watching, "infinite_watch", api_server)
    kopf_events.install()
    kopf_events.install()  # idempotent: wrapped once
    seen: list[dict[str, Any]] = []
    both = asyncio.Event()

    async def processor(*, raw_event: bodies.RawEvent, **_: Any) -> str | None:
        seen.append(dict(raw_event))
        if len(seen) == 2:
            both.set()
        return None  # no patch of kopf's

    watcher = asyncio.create_task(
        queueing.watcher(
            namespace=references.NamespaceName("team-a"),
            settings=kopf.OperatorSettings(),
            resource=RESOURCE,
            processor=processor,
        )
    )
    try:
        await asyncio.wait_for(both.wait(), timeout=5)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    assert sorted(event["object"]["metadata"]["uid"] for event in seen) == ["u1", "u2"]
    expected = _event("u1")["object"]
    del expected["metadata"]["managedFields"]
    first = next(event for event in seen if event["object"]["metadata"]["uid"] == "u1")
    assert first == {"type": "ADDED", "object": expected}


@pytest.mark.parametrize(
    "event",
    [
        watching.Bookmark.LISTED,
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410}},
        {"type": "ADDED", "object": {"metadata": None}},
    ],
)
def test_events_without_managed_fields_pass_unchanged(event: Any) -> None:
    before = repr(event)
    assert kopf_events.without_managed_fields(event) is event
    assert repr(event) == before
