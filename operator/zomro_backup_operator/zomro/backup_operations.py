"""The backup operations of :class:`~zomro_backup_operator.zomro.client.ZomroClient`.

A mixin, so that ``client.list_backups(...)`` and the rest are the client's own methods while
client.py keeps the call machinery. The same rules as for schedules: reads retry,
writes are sent at most once and an unknown outcome raises :class:`UnknownOutcomeError`; the one
exception is the rotation, an idempotent setting, which is sent once more on an unknown outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from zomro_backup_operator.zomro import backup_wire
from zomro_backup_operator.zomro.errors import (
    BackupProtectedError,
    NotFoundError,
    UnknownOutcomeError,
    ZomroError,
    may_mean_gone,
)
from zomro_backup_operator.zomro.funcs import (
    FUNC_BACKUP_EDIT,
    FUNC_BACKUPS,
    FUNC_IMAGE_DELETE,
    FUNC_IMAGE_EDIT,
    FUNC_INSTANCE_EDIT,
)
from zomro_backup_operator.zomro.models import (
    Backup,
    BackupListing,
    validate_backup_name,
    validate_backup_rotation,
)
from zomro_backup_operator.zomro.wire import Doc

logger = logging.getLogger("zomro_backup_operator.zomro.client")


class _Calls(Protocol):
    """What the operations need of the client: its read, list and write calls."""

    async def _read_list(self, func: str, fields: Mapping[str, str]) -> Doc: ...

    async def _read(self, func: str, fields: Mapping[str, str]) -> Doc: ...

    async def _write(self, func: str, fields: Mapping[str, str]) -> Doc: ...


class BackupOperations:
    """Listing, reading, taking and deleting backups, and an instance's backup rotation."""

    async def list_backups(self: _Calls, instance_id: str) -> BackupListing:
        """All backups of one instance (every page) with its rotation and manual counts.

        An unknown or foreign instance: :class:`AccessDeniedError`, as for schedules.
        """
        doc = await self._read_list(FUNC_BACKUPS, {"elid": instance_id})
        return backup_wire.parse_backup_listing(doc)

    async def get_backup(self: _Calls, backup_id: str) -> Backup | None:
        """One backup's details (``image.edit`` without ``sok``); None when Zomro says no such
        backup exists (``missed``/``elid``). Other refusals, e.g. ``access``, raise."""
        return await _read_backup(self, backup_id)

    async def create_manual_backup(self: _Calls, instance_id: str, name: str) -> None:
        """Take a manual backup now. Zomro's answer carries no id: list the instance to find it.

        Sent at most once. Refusals: :class:`DailyBackupLimitError` (5 a day),
        :class:`BackupLimitError` (100 in all), :class:`OperationInProgressError` (the instance
        is busy, e.g. with another backup: retryable). An unknown outcome raises
        :class:`UnknownOutcomeError`: list before trying again, or two backups may be made.
        """
        validate_backup_name(name)
        await self._write(FUNC_BACKUP_EDIT, {"plid": instance_id, "name": name, "sok": "ok"})

    async def delete_backup(self: _Calls, backup_id: str) -> None:
        """Delete a backup image. One already gone counts as deleted, once a read confirms it.

        Refused while protected: :class:`BackupProtectedError` (also when the refusal does not
        say why but a read shows the backup protected).
        """
        try:
            await self._write(FUNC_IMAGE_DELETE, {"elid": backup_id})
        except ZomroError as exc:
            if not may_mean_gone(exc):
                raise
            try:
                current = await _read_backup(self, backup_id)
            except ZomroError:
                raise exc from None
            if current is None:
                logger.debug("zomro %s: backup already gone", FUNC_IMAGE_DELETE)
                return
            if current.protected:
                raise BackupProtectedError(
                    f"{FUNC_IMAGE_DELETE}: backup {backup_id} is protected: {exc.message}"
                ) from exc
            raise

    async def set_backup_rotation(self: _Calls, instance_id: str, keep: int) -> None:
        """Set how many scheduled backups the instance keeps (1..10; Zomro drops the oldest).

        Setting a value twice does what setting it once does, so an unknown outcome is sent once
        more before :class:`UnknownOutcomeError` is raised. The current value is
        ``list_backups(...).rotation``.
        """
        validate_backup_rotation(keep)
        fields = {"elid": instance_id, "backup_rotation": str(keep), "sok": "ok"}
        try:
            await self._write(FUNC_INSTANCE_EDIT, fields)
        except UnknownOutcomeError:
            logger.debug(
                "zomro %s: outcome unknown, sending the same value again", FUNC_INSTANCE_EDIT
            )
            await self._write(FUNC_INSTANCE_EDIT, fields)


async def _read_backup(calls: _Calls, backup_id: str) -> Backup | None:
    try:
        doc = await calls._read(FUNC_IMAGE_EDIT, {"elid": backup_id})
    except NotFoundError:
        return None
    return backup_wire.parse_backup_details(doc, backup_id=backup_id)
