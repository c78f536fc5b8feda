#!/usr/bin/env python3
"""What kopf holds per object while many are under way at once, measured with tracemalloc.

Runs kopf's own watcher, workers and processing (no API server: the watch stream is a list of
BackupSchedule bodies, parsed from JSON as a watch would) over N objects with the operator's two
indexes, and reports the traced heap per object in one situation:

- ``barrier``: every object indexed, all held at kopf's readiness barrier (a restart, until the
  last object is indexed);
- ``returns``: the barrier released, a resume handler that returns without awaiting: the peak
  while kopf runs all of them;
- ``awaits``: the same handler awaiting once (``asyncio.sleep(0)``): the peak;
- ``waits``: every object in a resume handler that waits (as one waiting for Zomro does).

    .venv/bin/python hack/kopf_object_cost.py --objects 1000 barrier returns awaits waits

It leans on kopf's private modules, as kopf_readiness.py and kopf_events.py do.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import sys
import tracemalloc
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

import kopf
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import watching
from kopf._cogs.structs import references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing, queueing

from zomro_backup_operator import instance_loops, kopf_events
from zomro_backup_operator.claims import index_entry
from zomro_backup_operator.resources import FINALIZER, GROUP, PLURAL, VERSION

MODES = ("barrier", "returns", "awaits", "waits")
RESOURCE = references.Resource(
    group=GROUP,
    version=VERSION,
    plural=PLURAL,
    kind="BackupSchedule",
    namespaced=True,
    verbs=frozenset({"list", "watch", "patch", "get"}),
    preferred=True,
)


def body_json(i: int) -> str:
    """A BackupSchedule as the bench makes them, in sync, as the API server lists it (without
    managedFields, which kopf_events.py drops)."""
    spec = {
        "instanceId": str(5_200_000 + i % 500),
        "scheduleName": f"nightly-{i}",
        "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
        "time": "02:01",
        "credentialsSecretRef": {"name": "zomro-credentials"},
    }
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": f"Zomro schedule {900_000 + i} 'nightly-{i}' runs Monday to Friday at 02:01",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-12-04T10:00:05Z",
    }
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupSchedule",
        "metadata": {
            "name": f"bench-{i:05d}",
            "namespace": "bench",
            "uid": f"{i:08d}-aaaa-bbbb-cccc-1234567890ab",
            "resourceVersion": str(100_000 + i),
            "generation": 1,
            "creationTimestamp": "2026-12-04T10:00:00Z",
            "finalizers": [FINALIZER],
        },
        "spec": spec,
        "status": {
            "scheduleId": str(900_000 + i),
            "observedGeneration": 1,
            "nextRunTime": "2026-12-05T02:01:00Z",
            "conditions": [ready],
            "kopf": {"last-handled-configuration": json.dumps({"spec": spec})},
        },
    }
    return json.dumps({"type": None, "object": obj})


class Arrivals:
    """Counts objects reaching a point; ``all`` is set at the N-th."""

    def __init__(self, n: int) -> None:
        self.n, self.count, self.all = n, 0, asyncio.Event()

    def arrive(self) -> None:
        self.count += 1
        if self.count == self.n:
            self.all.set()


def registry_for(mode: str, handled: Arrivals, forever: asyncio.Event) -> kopf.OperatorRegistry:
    """The operator's two indexes, one resume handler that behaves as ``mode`` says, and a
    deletion handler (which makes kopf keep the objects' finalizer, as the operator's does)."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.index(*resource, registry=registry, id="claims")
    def claims(
        spec: kopf.Spec, status: kopf.Status, namespace: str | None, name: str, **_: Any
    ) -> Any:
        return index_entry(spec.get("instanceId"), status.get("scheduleId"), f"{namespace}/{name}")

    @kopf.index(*resource, registry=registry, id="by_instance")
    def by_instance(body: kopf.Body, **_: Any) -> Any:
        return instance_loops.index_entry(body)

    @kopf.on.resume(*resource, registry=registry, id="ensure")
    async def ensure(**_: Any) -> None:
        handled.arrive()
        if mode == "awaits":
            await asyncio.sleep(0)
        elif mode == "waits":
            await forever.wait()

    @kopf.on.delete(*resource, registry=registry, id="delete")
    async def delete(**_: Any) -> None:
        """Unused here; without a deletion handler kopf would drop the finalizer instead."""

    return registry


async def measure(mode: str, n: int) -> tuple[float, float]:
    """(KiB per object at the barrier, KiB per object at the peak of ``mode``)."""
    indexed, handled, forever = Arrivals(n), Arrivals(n), asyncio.Event()
    registry = registry_for(mode, handled, forever)
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()
    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    operator_indexed = aiotoggles.ToggleSet(all)
    others = await operator_indexed.make_toggle(name="the other kinds")  # on: barrier released
    this_kind = await operator_indexed.make_toggle(name="BackupSchedules")

    index_resource = indexing.index_resource

    async def counted(**kwargs: Any) -> None:
        await index_resource(**kwargs)
        indexed.arrive()

    texts = [body_json(i) for i in range(n)]

    async def api_server(**_: Any) -> AsyncIterator[Any]:
        while texts:
            yield json.loads(texts.pop())
        yield watching.Bookmark.LISTED
        await forever.wait()

    saved = index_resource, vars(watching)["infinite_watch"]
    vars(indexing)["index_resource"] = counted  # processing looks it up in that module
    vars(watching)["infinite_watch"] = kopf_events.stripping(api_server)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    watcher = asyncio.create_task(
        queueing.watcher(
            namespace=references.NamespaceName("bench"),
            settings=settings,
            resource=RESOURCE,
            operator_indexed=operator_indexed,
            resource_indexed=this_kind,
            processor=functools.partial(
                processing.process_resource_event,
                lifecycle=lifecycles.all_at_once,
                registry=registry,
                settings=settings,
                indexers=indexers,
                memories=inventory.ResourceMemories(),
                memobase=cast(Any, kopf.Memo()),
                event_queue=asyncio.Queue(),
                resource=RESOURCE,
            ),
        )
    )
    try:
        await asyncio.wait_for(indexed.all.wait(), timeout=300)
        gc.collect()
        at_barrier = tracemalloc.get_traced_memory()[0] - base
        peak = at_barrier
        if mode != "barrier":
            tracemalloc.reset_peak()
            await others.turn_to(True)
            await asyncio.wait_for(handled.all.wait(), timeout=300)
            peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        forever.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        vars(indexing)["index_resource"], vars(watching)["infinite_watch"] = saved
    return at_barrier / n / 1024, peak / n / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", choices=[*MODES, []], help="default: all")
    parser.add_argument("--objects", type=int, default=1000, help="how many objects")
    args = parser.parse_args(argv)
    logging.getLogger("kopf").setLevel(logging.ERROR)  # its farewell to the streams it left
    print(f"kopf {version('kopf')}, {args.objects} objects; traced heap per object (KiB)")
    print(f"{'mode':8} {'at the barrier':>15} {'peak':>8}")
    for mode in args.modes or MODES:
        at_barrier, peak = asyncio.run(measure(mode, args.objects))
        print(f"{mode:8} {at_barrier:15.1f} {peak:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
