"""kopf handlers of the Backup and BackupRetention kinds: decorators only, each a few lines that
call ``backup_handling``. kopf's start-up settings and the runtime are handlers.py's."""

from __future__ import annotations

from typing import Any

import kopf

from zomro_backup_operator import backup_handling, manual_backup, retention, runtime
from zomro_backup_operator.backup_handling import backup_claim
from zomro_backup_operator.claims import ClaimKey, index_entry
from zomro_backup_operator.handling import ResourceCall
from zomro_backup_operator.resources import GROUP, VERSION
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro.models import is_object_id


def register_backup_kinds(registry: kopf.OperatorRegistry, config: Settings) -> None:
    """Register the handlers of both kinds; the retention drift period comes from ``config``."""
    backups = (GROUP, VERSION, manual_backup.PLURAL)
    retentions = (GROUP, VERSION, retention.PLURAL)

    @kopf.index(*backups, registry=registry, id="backup_claims")
    def backup_claims(
        spec: kopf.Spec, status: kopf.Status, namespace: str | None, name: str, **_: Any
    ) -> dict[ClaimKey, str]:
        owner = f"{namespace}/{name}"
        return index_entry(spec.get("instanceId"), status.get("backupId"), owner, backup_claim)

    @kopf.on.resume(*backups, registry=registry, id="take")
    @kopf.on.create(*backups, registry=registry, id="take")
    async def take(memo: kopf.Memo, retry: int, **kwargs: Any) -> None:
        call = ResourceCall.from_kopf(kwargs, "backup_claims")
        await backup_handling.take_backup(runtime.of(memo), call, retry)

    @kopf.on.delete(*backups, registry=registry, id="remove")
    async def remove(memo: kopf.Memo, retry: int, **kwargs: Any) -> None:
        call = ResourceCall.from_kopf(kwargs, "backup_claims")
        await backup_handling.remove_backup(runtime.of(memo), call, retry)

    @kopf.index(*retentions, registry=registry, id="retention_claims")
    def retention_claims(
        status: kopf.Status, namespace: str | None, name: str, **_: Any
    ) -> dict[ClaimKey, str]:
        instance_id = str(status.get("instanceId") or "")
        if not is_object_id(instance_id):
            return {}
        return {(instance_id, retention.ROTATION_CLAIM): f"{namespace}/{name}"}

    @kopf.on.resume(*retentions, registry=registry, id="ensure")
    @kopf.on.create(*retentions, registry=registry, id="ensure")
    @kopf.on.update(*retentions, registry=registry, id="ensure", field="spec")
    async def ensure(memo: kopf.Memo, retry: int, **kwargs: Any) -> None:
        call = ResourceCall.from_kopf(kwargs, "retention_claims")
        await backup_handling.ensure_retention(runtime.of(memo), call, retry)

    @kopf.timer(*retentions, registry=registry, id="resync", interval=config.resync_seconds)
    async def resync(memo: kopf.Memo, meta: kopf.Meta, **kwargs: Any) -> None:
        if meta.get("deletionTimestamp"):
            return
        call = ResourceCall.from_kopf({**kwargs, "meta": meta}, "retention_claims")
        await backup_handling.ensure_retention(runtime.of(memo), call, None)

    @kopf.on.delete(*retentions, registry=registry, id="release")
    async def release(memo: kopf.Memo, **kwargs: Any) -> None:
        call = ResourceCall.from_kopf(kwargs, "retention_claims")
        await backup_handling.release_retention(runtime.of(memo), call)
