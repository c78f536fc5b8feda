"""Who claims which Zomro schedule: so that two resources never take the same one, even while
their statuses are still on their way to the API server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from zomro_backup_operator.zomro.models import is_object_id

ClaimKey = tuple[str, str]
"""(instance id, schedule id)."""


def index_entry(
    instance_id: object,
    held_id: object,
    owner: str,
    second: Callable[[str], str] = str,
) -> dict[ClaimKey, str]:
    """One resource's entry in a claims index: ``(instance id, second(held id))`` to ``owner``.
    A missing or malformed id claims nothing; the resource's own handlers report it."""
    instance, held = str(instance_id or ""), str(held_id or "")
    if not is_object_id(instance) or not is_object_id(held):
        return {}
    return {(instance, second(held)): owner}


class Claims:
    """Which resource ("namespace/name") owns which remote schedule.

    The cluster's truth is kopf's index over ``status.scheduleId`` (complete at start-up, so a
    restarted operator knows every claim before it handles anything). Claims this process makes
    or drops are recorded here at once, because the index only learns of them when the status
    write comes back through the watch.
    """

    def __init__(self) -> None:
        self._local: dict[ClaimKey, str | None] = {}

    def owner(
        self,
        instance_id: str,
        schedule_id: str,
        indexed: Mapping[ClaimKey, Iterable[str]],
        besides: str | None = None,
    ) -> str | None:
        """The resource that owns the schedule; with ``besides``, one other than that resource.

        A claim made in this process wins; else every status naming the id counts, so a
        resource whose status was set to another's id sees that other one as the owner."""
        key = (instance_id, schedule_id)
        if key in self._local:
            local = self._local[key]
            return None if local == besides else local
        return next((o for o in sorted(indexed.get(key, ())) if o != besides), None)

    def claim(self, instance_id: str, schedule_id: str, owner: str) -> None:
        self._local[(instance_id, schedule_id)] = owner

    def release(self, instance_id: str, schedule_id: str, owner: str) -> None:
        key = (instance_id, schedule_id)
        if self._local.get(key, owner) == owner:
            self._local[key] = None
