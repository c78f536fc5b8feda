"""kopf's indexing barrier with one wake-up instead of two per object (issue 17).

With index handlers, kopf holds every handler until every existing object has been indexed: its
``ToggleSet(all)`` gets an "off" toggle per new object, which the object's worker drops once
indexed, and every worker then waits for the set to be on (empty). kopf's ``ToggleSet`` wakes
every waiting worker at each ``make_toggle`` and each ``drop_toggle``, so a start over n objects
costs about 2 n x n wake-ups. Over 10 000 BackupSchedules a restarted operator used a whole core
for more than 11 minutes without running one handler (py-spy: ``make_toggle`` ->
``Condition.notify_all``, docs/performance.md).

:class:`QuietToggleSet` wakes the waiters only when the set's state changes, which is all a waiter
can be waiting for: ``wait_for`` waits on ``is_on()``, and ``is_on()`` depends only on the
members. A member's own ``Toggle.turn_to`` still notifies the shared condition, as before.

:func:`install` puts it where kopf's orchestrator makes its sets (``aiotoggles.ToggleSet`` is
looked up when the operator starts). This leans on kopf's private module, so the unit tests check
that the orchestrator still makes its sets from it; the fix belongs upstream, in kopf.
"""

from __future__ import annotations

from collections.abc import Iterable

from kopf._cogs.aiokits import aiotoggles


class QuietToggleSet(aiotoggles.ToggleSet):
    """A ``ToggleSet`` that notifies its waiters only when its overall state changes."""

    async def make_toggle(
        self, __val: bool = False, *, name: str | None = None
    ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            was_on = self.is_on()
            self._toggles.add(toggle)
            self._notify_if_changed(was_on)
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            was_on = self.is_on()
            self._toggles.difference_update(toggles)
            self._notify_if_changed(was_on)

    def _notify_if_changed(self, was_on: bool) -> None:
        if self.is_on() != was_on:
            self._condition.notify_all()


def install() -> None:
    """Make kopf's orchestrator build its toggle sets (the indexing barrier, the peering pause)
    as :class:`QuietToggleSet`; idempotent."""
    vars(aiotoggles)["ToggleSet"] = QuietToggleSet
