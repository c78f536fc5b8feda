"""kopf handlers: decorators only, each a few lines that call ``handling``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from zomro_backup_operator import (
    create_answers,
    handling,
    instance_loops,
    kopf_events,
    kopf_readiness,
    runtime,
)
from zomro_backup_operator.backup_handlers import register_backup_kinds
from zomro_backup_operator.claims import ClaimKey, index_entry
from zomro_backup_operator.create_answers import CreateAnswers
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.instance_loops import InstanceLoops, Tracked
from zomro_backup_operator.kube_session import bounded_session
from zomro_backup_operator.resources import FINALIZER, GROUP, PLURAL, VERSION
from zomro_backup_operator.settings import Settings


def register(
    registry: kopf.OperatorRegistry,
    config: Settings,
    may_write: Callable[[], bool] | None = None,
    *,
    kube_connections: int | None = None,
) -> None:
    """Register every handler; the drift check's period and the runtime come from ``config``;
    ``may_write`` fences every Zomro and status write (leader election); ``kube_connections``
    bounds kopf's pool of API-server connections (None: kopf's own, unbounded)."""
    resource = (GROUP, VERSION, PLURAL)
    # The index handlers below make kopf hold every handler until all objects are indexed; its
    # barrier woke every waiting object at each object indexed (n^2 over a restart).
    kopf_readiness.install()
    # kopf's workers hold each object's last event, which loses its managedFields first.
    kopf_events.install()

    @kopf.on.startup(registry=registry, id="start")
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # kopf's own state goes to status, and the finalizer is ours: GitOps tools see no drift.
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.StatusProgressStorage()
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()
        settings.posting.level = logging.INFO
        # A timer still running when its resource is deleted (BackupRetention's; BackupSchedules
        # have none since their checks moved to instance_loops) keeps the finalizer until kopf
        # looks again: by default after 60 s, which once held a fifth of a mass deletion of
        # BackupSchedules for a minute (hack/bench).
        settings.background.cancellation_polling = 2.0
        memo.runtime = runtime.Runtime.build(config, may_write=may_write)
        memo.loops = InstanceLoops(memo.runtime)
        memo.answers = CreateAnswers(memo.runtime, memo.loops.latest_call)

    @kopf.on.login(registry=registry, id="login")
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | kopf.AiohttpSession | None:
        # In-cluster service account, else the current kubeconfig, as the official client sees
        # it; through a pool of at most ``kube_connections`` (kube_session.py).
        info = kopf.login_via_client(**kwargs)
        return None if info is None else bounded_session(info, kube_connections)

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        await instance_loops.of(memo).aclose()
        await create_answers.of(memo).aclose()
        await runtime.of(memo).clients.aclose()

    @kopf.index(*resource, registry=registry, id="claims")
    def claims(
        spec: kopf.Spec, status: kopf.Status, namespace: str | None, name: str, **_: Any
    ) -> dict[ClaimKey, str]:
        return index_entry(spec.get("instanceId"), status.get("scheduleId"), f"{namespace}/{name}")

    @kopf.index(*resource, registry=registry, id="by_instance")
    def by_instance(body: kopf.Body, **_: Any) -> dict[str, Tracked] | None:
        return instance_loops.index_entry(body)

    @kopf.on.resume(*resource, registry=registry, id="ensure")
    @kopf.on.create(*resource, registry=registry, id="ensure")
    @kopf.on.update(*resource, registry=registry, id="ensure")
    async def ensure(memo: kopf.Memo, retry: int, reason: str, **kwargs: Any) -> None:
        # The drift and backup checks of the resource's instance run in the instance's loop.
        loops = instance_loops.of(memo)
        loops.watch(kwargs["spec"], kwargs["by_instance"], kwargs["claims"])
        call = HandlerCall.from_kopf(kwargs, "claims")
        if reason == kopf.Reason.RESUME and call.settled():
            loops.confirm(call.spec, call.uid)  # the loop checks it at once; nothing awaited here
            return
        await handling.ensure(
            runtime.of(memo), call, retry, create_answers.of(memo), may_defer=True
        )

    @kopf.on.delete(*resource, registry=registry, id="delete")
    async def delete(memo: kopf.Memo, retry: int, **kwargs: Any) -> None:
        if await instance_loops.of(memo).hold(kwargs["uid"]):
            raise kopf.TemporaryError("a periodic check was under way; deleting after it", delay=1)
        await handling.remove(runtime.of(memo), HandlerCall.from_kopf(kwargs, "claims"), retry)

    register_backup_kinds(registry, config)
