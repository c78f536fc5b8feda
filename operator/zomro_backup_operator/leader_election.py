"""Leader election over a ``coordination.k8s.io/v1`` Lease, with a fence on every write.

The election itself is the official client's (``kubernetes.leaderelection``: ``LeaderElection``
over its ``LeaseLock``, which creates and replaces the Lease with the API server's optimistic
concurrency), run in a thread of its own. What it lacks is added here (docs/design.md):

- the fence: "this process still holds the lease", measured on the monotonic clock from the START
  of its last successful renew and closed ``renew_deadline`` later. Every Zomro write and every
  status write asks it right before it is sent (``Leadership.may_write``);
- a dead man's switch: the kernel's ``ITIMER_REAL`` (which, like CLOCK_MONOTONIC, runs on while
  the process is paused or SIGSTOPped) is re-armed after each renew to expire when the fence
  closes. Its SIGALRM, left at the default action, ends the process there and then, before any
  more of its code runs: that also covers what no hook of ours sees, kopf's own writes (the
  end-of-handler status patch, Events, finalizers);
- an exit as soon as another holder is seen or the renew deadline passes (controller-runtime
  exits too), a timeout on each Lease request, and the Lease released on a clean stop so that a
  standby takes over at its next try instead of after the lease duration.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import kubernetes
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from zomro_backup_operator.settings import Settings

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Fence:
    """Whether this process may still write: until ``renew_deadline`` seconds after the start of
    its last successful renew, measured on ``clock`` (monotonic), and never again once lost.

    A standby can take the Lease over only ``lease_duration`` after it saw that renew land, which
    is after the renew started; the leader stops ``lease_duration - renew_deadline`` earlier, a
    margin for a write already on the wire and for clocks that run at slightly different rates.
    """

    def __init__(self, renew_deadline: float, clock: Clock = time.monotonic) -> None:
        self._renew_deadline = renew_deadline
        self._clock = clock
        self._renew_started: float | None = None
        self._lost = False
        self._lock = threading.Lock()

    def renewed(self, started: float) -> float:
        """A renew that began at ``started`` succeeded; the seconds the fence now stays open."""
        with self._lock:
            if not self._lost and (self._renew_started is None or started > self._renew_started):
                self._renew_started = started
        return self.remaining()

    def lose(self) -> None:
        with self._lock:
            self._lost = True

    def remaining(self) -> float:
        with self._lock:
            if self._lost or self._renew_started is None:
                return 0.0
            return max(0.0, self._renew_started + self._renew_deadline - self._clock())

    def holds(self) -> bool:
        return self.remaining() > 0.0


def arm_alarm(seconds: float) -> None:
    """(Re)arm the process's dead man's switch: SIGALRM in ``seconds``; 0 disarms it."""
    signal.setitimer(signal.ITIMER_REAL, seconds)


def exit_now() -> None:
    """Leave at once, as controller-runtime does on a lost lease: no cleanup that could write."""
    logging.shutdown()
    os._exit(1)


class LeaseApi(Protocol):
    """What LeaseLock calls of CoordinationV1Api, and when the API server last answered."""

    answered_at: float | None

    def read_namespaced_lease(self, name: str, namespace: str) -> Any: ...

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any: ...

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any: ...


class TimedLeaseApi:
    """The three CoordinationV1Api calls LeaseLock makes, each bounded by ``timeout`` (the
    official lock sets none, and a hung request would hold the election still), noting when the
    API server last answered."""

    def __init__(self, api_client: Any, timeout: float, clock: Clock = time.monotonic) -> None:
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._timeout = timeout
        self._clock = clock
        self.answered_at: float | None = None

    def _answered(self, result: Any) -> Any:
        self.answered_at = self._clock()
        return result

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        return self._answered(
            self._api.read_namespaced_lease(name, namespace, _request_timeout=self._timeout)
        )

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        return self._answered(
            self._api.create_namespaced_lease(namespace, body, _request_timeout=self._timeout)
        )

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return self._answered(
            self._api.replace_namespaced_lease(
                name=name, namespace=namespace, body=body, _request_timeout=self._timeout
            )
        )


class _Election(leaderelection.LeaderElection):
    """The official election, each attempt wrapped: a success moves the fence and the alarm
    (from the attempt's start), another holder seen while leading is a lost lease, an error is
    a failed attempt (the official loop would die of it), and nothing is tried once stopping."""

    def __init__(
        self,
        config: Any,
        *,
        fence: Fence,
        clock: Clock,
        arm: Callable[[float], None],
        on_lost: Callable[[str], None],
    ) -> None:
        super().__init__(config)  # type: ignore[no-untyped-call]
        self._fence = fence
        self._clock = clock
        self._arm = arm
        self._on_lost = on_lost
        self.leading = False
        self.stopping = False
        self.attempt_lock = threading.Lock()

    def try_acquire_or_renew(self) -> bool:
        with self.attempt_lock:
            if self.stopping:
                return False
            started = self._clock()
            try:
                succeeded = bool(super().try_acquire_or_renew())  # type: ignore[no-untyped-call]
            except Exception as exc:  # e.g. the API server unreachable: urllib3's own errors
                logger.warning("leader election: Lease request failed (%s)", type(exc).__name__)
                succeeded = False
            identity = self.election_config.lock.identity
            if succeeded:
                remaining = self._fence.renewed(started)
                if remaining <= 0.0:
                    self._lose("the renew took longer than the renew deadline")
                    return False
                self._arm(remaining)
                self.leading = True
                return True
            holder = getattr(self.observed_record, "holder_identity", None)
            if self.leading and holder not in (None, identity):
                self._lose(f"the Lease is now held by {holder}")
            return False

    def _lose(self, why: str) -> None:
        self._fence.lose()
        self.stopping = True
        self._on_lost(why)


class Leadership:
    """This process's part in the election: start it, ask it (``may_write``, ``leading``), and
    release the Lease on a clean stop.

    ``lease_api`` (a :class:`TimedLeaseApi` over the API server), ``clock``, ``arm`` (the dead
    man's switch) and ``on_lost`` (exit) are the test seams."""

    def __init__(
        self,
        settings: Settings,
        identity: str,
        lease_api: LeaseApi,
        *,
        clock: Clock = time.monotonic,
        arm: Callable[[float], None] = arm_alarm,
        on_lost: Callable[[], None] = exit_now,
    ) -> None:
        if settings.lease_namespace is None:
            raise ValueError("leader election needs settings.lease_namespace")
        self.identity = identity
        self.lease = f"{settings.lease_namespace}/{settings.lease_name}"
        self.fence = Fence(settings.lease_renew_deadline_seconds, clock)
        self._clock = clock
        self._arm = arm
        self._on_lost = on_lost
        self._contact_window = float(settings.lease_duration_seconds)
        self._lock = LeaseLock(  # type: ignore[no-untyped-call]
            settings.lease_name, settings.lease_namespace, identity
        )
        self._api = lease_api
        self._lock.api_instance = lease_api  # type: ignore[assignment]
        self._on_leading: Callable[[], None] = lambda: None
        self._election = _Election(
            electionconfig.Config(  # type: ignore[no-untyped-call]
                self._lock,
                lease_duration=settings.lease_duration_seconds,
                renew_deadline=settings.lease_renew_deadline_seconds,
                retry_period=settings.lease_retry_period_seconds,
                onstarted_leading=self._started_leading,
                onstopped_leading=lambda: self._lost("the Lease was not renewed in time"),
            ),
            fence=self.fence,
            clock=clock,
            arm=arm,
            on_lost=self._lost,
        )
        self._thread: threading.Thread | None = None
        self._released = False

    def start(self, on_leading: Callable[[], None]) -> None:
        """Run the election in a thread; ``on_leading`` is called (in another thread) once this
        process holds the Lease."""
        self._on_leading = on_leading
        logger.info("leader election: %s is a candidate for Lease %s", self.identity, self.lease)
        self._thread = threading.Thread(
            target=self._election.run, name="leader-election", daemon=True
        )
        self._thread.start()

    def may_write(self) -> bool:
        """The fence: True only while this process certainly still holds the Lease."""
        return self.fence.holds()

    @property
    def leading(self) -> bool:
        return self._election.leading and self.fence.holds()

    @property
    def alive(self) -> bool:
        """The election thread runs (a standby's liveness)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def in_contact(self) -> bool:
        """The API server answered a Lease request lately (a standby ready to take over)."""
        answered = self._api.answered_at
        return answered is not None and self._clock() - answered < self._contact_window

    def release(self) -> None:
        """After a clean stop (nothing of the operator runs any more): give the Lease up, so
        that a standby takes over at its next try. Never renews or acquires after this."""
        with self._election.attempt_lock:
            self._election.stopping = True
            self._released = True
        if not self.fence.holds():
            return
        self.fence.lose()
        self._arm(0.0)  # nothing writes any more; the release itself may take a moment
        now = str(datetime.datetime.now())
        try:
            found, record = self._lock.get(  # type: ignore[no-untyped-call]
                self._lock.name, self._lock.namespace
            )
            if found and record.holder_identity == self.identity:
                released = LeaderElectionRecord("", "1", now, now)  # type: ignore[no-untyped-call]
                self._lock.update(  # type: ignore[no-untyped-call]
                    self._lock.name, self._lock.namespace, released
                )
                logger.info("leader election: released Lease %s", self.lease)
        except Exception as exc:  # the Lease then expires by itself
            logger.warning("leader election: could not release the Lease (%s)", type(exc).__name__)

    def _started_leading(self) -> None:
        logger.info("leader election: %s leads (Lease %s)", self.identity, self.lease)
        self._on_leading()

    def _lost(self, why: str) -> None:
        self.fence.lose()
        if self._released:
            return  # given up on a clean stop: nothing was lost
        logger.error("leader election: lost the Lease (%s); exiting so that one replica acts", why)
        self._on_lost()
