"""kopf's watch events without ``metadata.managedFields`` (issue 17).

kopf keeps each object's last event in the object's worker while the worker lives: through a
mass apply, and over a whole restart, where every worker waits for every object to be indexed.
A BackupSchedule's ``managedFields`` (one entry per writer: the applier, kopf's finalizer, the
status writes) are about 1.5 KB of its 2.7 KB of JSON and 10 of its 16 KB as Python objects
(measured on the bench's resources, docs/performance.md). Neither kopf nor the operator reads
them: the handlers, the indexes and kopf's diff base take spec, status, labels and annotations.

:func:`install` wraps kopf's ``watching.infinite_watch``, which kopf's watcher looks up in that
module each time it starts a watch, so that every event's object loses its ``managedFields``
before kopf's watcher hands it to a worker. This leans on kopf's private module, so the unit
tests run kopf's own watcher over it and fail if an upgrade of kopf stops using it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from kopf._cogs.clients import watching

Watch = Callable[..., AsyncIterator[Any]]

_WRAPPED: Final = "_zomro_strips_managed_fields"


def without_managed_fields(event: Any) -> Any:
    """The watch event with its object's ``metadata.managedFields`` removed (in place: the event
    was parsed for kopf alone); anything else (kopf's bookmarks) as it is."""
    if isinstance(event, dict):
        obj = event.get("object")
        if isinstance(obj, dict):
            metadata = obj.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("managedFields", None)
    return event


def stripping(watch: Watch) -> Watch:
    """``watch`` whose events come out :func:`without_managed_fields`."""

    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        async for event in watch(**kwargs):
            yield without_managed_fields(event)

    setattr(infinite_watch, _WRAPPED, True)
    return infinite_watch


def install() -> None:
    """Make kopf's watcher receive its events :func:`without_managed_fields`; idempotent."""
    if not getattr(watching.infinite_watch, _WRAPPED, False):
        vars(watching)["infinite_watch"] = stripping(watching.infinite_watch)
