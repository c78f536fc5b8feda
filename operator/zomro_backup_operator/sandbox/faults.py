"""Injected failures: what the real service and its edge can do to a client on a bad day.

One mutable object, read by the server on every API request and changed by tests (directly, or
through ``/_sandbox/faults``). The JSON form is the same in both directions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

BLOCK_STATUSES = (403, 460, 429)
OUTAGE_MODES = ("reset", "503")
NAME_CASES = ("lower", "upper")
HOSTILE_MODES = ("truncated", "wrong_types", "html")
BACKUP_RUN_MODES = ("fail", "late", "skip")
GROUP_DELETE_MODES = ("first", "partial", "refused")


class FaultError(ValueError):
    """A fault setting that cannot be applied; the message names it."""


@dataclass
class Faults:
    """Every fault the sandbox can inject. The defaults inject nothing."""

    error_rate: float = 0.0
    """Share (0..1) of API calls answered with a 5xx and a non-JSON body, before any effect."""
    error_status: int = 500
    error_funcs: list[str] | None = None
    """Only these ``func`` values get ``error_rate`` errors; None means all."""
    block_status: int | None = None
    """403 or 460 (or 429): the edge refuses every API call while set."""
    block_until: float | None = None
    """Sandbox-clock time the block ends; None keeps it until cleared."""
    block_retry_after: int | None = None
    latency: float = 0.0
    """Seconds added to each API call, while the session counts as in process."""
    late_create_seconds: float = 0.0
    late_create_drop: bool = False
    """Apply the create, then close the connection without any answer."""
    late_create_count: int | None = None
    """How many creates to answer late; None means all while set."""
    outage: str | None = None
    """``reset`` (connections reset) or ``503``; the control endpoint keeps working."""
    name_collapse: bool = False
    """Store schedule names with runs of whitespace collapsed to one space."""
    name_case: str | None = None
    """``lower`` or ``upper``: store schedule names in that case."""
    name_cut: int | None = None
    """Store schedule names cut to this many characters (over 60 are still refused)."""
    listing_delay: float = 0.0
    """Seconds after a create before listings show the new schedule (eventual consistency)."""
    two_factor: bool = False
    """The accounts ask for a second factor: a right password gets the code form, not a session."""
    hostile: str | None = None
    """Every call but the login answered 200 with a body that is not Zomro's document."""
    backup_run_mode: str | None = None
    """Scheduled runs ``fail`` (end in ``error``), are ``late`` or ``skip`` (no backup at all)."""
    backup_run_seconds: float = 0.0
    """How late a ``late`` run's backup appears."""
    backup_run_instances: list[str] | None = None
    """Only runs of these instances are affected; None means all."""
    backup_run_count: int | None = None
    """How many runs to affect; None means all while set."""
    group_delete: str | None = None
    """How a schedule delete naming several ids is served: None deletes all or (one missing or
    busy) none; ``first`` deletes the first only and answers ok; ``partial`` deletes in order up
    to the first it cannot, then refuses naming that one; ``refused`` refuses any group."""
    rng: random.Random = field(default_factory=random.Random, repr=False)

    # ------------------------------------------------------------------ decisions

    def blocked(self, now: float) -> bool:
        if self.block_status is None:
            return False
        if self.block_until is not None and now >= self.block_until:
            self.block_status = self.block_until = self.block_retry_after = None
            return False
        return True

    def should_error(self, func: str) -> bool:
        if self.error_rate <= 0:
            return False
        if self.error_funcs is not None and func not in self.error_funcs:
            return False
        return self.rng.random() < self.error_rate

    def take_late_create(self) -> tuple[float, bool] | None:
        """The delay and drop flag for this create, or None; counts the create."""
        if self.late_create_seconds <= 0 and not self.late_create_drop:
            return None
        if self.late_create_count is not None:
            if self.late_create_count <= 0:
                return None
            self.late_create_count -= 1
        return self.late_create_seconds, self.late_create_drop

    def take_backup_run(self, instance_id: str) -> tuple[str, float] | None:
        """The fault for this scheduled run of the instance, or None; counts the run."""
        if self.backup_run_mode is None:
            return None
        if self.backup_run_instances is not None and instance_id not in self.backup_run_instances:
            return None
        if self.backup_run_count is not None:
            if self.backup_run_count <= 0:
                return None
            self.backup_run_count -= 1
        return self.backup_run_mode, self.backup_run_seconds

    def stored_name(self, name: str) -> str:
        """What the service makes of an (already trimmed) schedule name in the current mode."""
        if self.name_collapse:
            name = " ".join(name.split())
        if self.name_case == "lower":
            name = name.lower()
        elif self.name_case == "upper":
            name = name.upper()
        if self.name_cut is not None:
            name = name[: self.name_cut].rstrip()
        return name

    # ------------------------------------------------------------------ JSON form

    def clear(self) -> None:
        fresh = Faults()
        for name in (
            "error_rate",
            "error_status",
            "error_funcs",
            "block_status",
            "block_until",
            "block_retry_after",
            "latency",
            "late_create_seconds",
            "late_create_drop",
            "late_create_count",
            "outage",
            "name_collapse",
            "name_case",
            "name_cut",
            "listing_delay",
            "two_factor",
            "hostile",
            "backup_run_mode",
            "backup_run_seconds",
            "backup_run_instances",
            "backup_run_count",
            "group_delete",
        ):
            setattr(self, name, getattr(fresh, name))

    def to_json(self, now: float) -> dict[str, Any]:
        self.blocked(now)
        block: dict[str, Any] | None = None
        if self.block_status is not None:
            block = {
                "status": self.block_status,
                "seconds": None if self.block_until is None else max(0.0, self.block_until - now),
                "retry_after": self.block_retry_after,
            }
        late: dict[str, Any] | None = None
        if self.late_create_seconds > 0 or self.late_create_drop:
            late = {
                "seconds": self.late_create_seconds,
                "drop": self.late_create_drop,
                "count": self.late_create_count,
            }
        runs: dict[str, Any] | None = None
        if self.backup_run_mode is not None:
            runs = {
                "mode": self.backup_run_mode,
                "seconds": self.backup_run_seconds,
                "instances": self.backup_run_instances,
                "count": self.backup_run_count,
            }
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "error_funcs": self.error_funcs,
            "block": block,
            "latency": self.latency,
            "late_create": late,
            "outage": self.outage,
            "names": {"collapse": self.name_collapse, "case": self.name_case, "cut": self.name_cut},
            "listing_delay": self.listing_delay,
            "two_factor": self.two_factor,
            "hostile": self.hostile,
            "backup_runs": runs,
            "group_delete": self.group_delete,
        }

    def update(self, data: dict[str, Any], now: float) -> None:
        """Apply the given keys (others stay); validate everything before changing anything."""
        staged = Faults(**{k: v for k, v in vars(self).items() if k != "rng"}, rng=self.rng)
        for key, value in self._fold_flat_keys(data, now).items():
            setter = _SETTERS.get(key)
            if setter is None:
                raise FaultError(f"unknown fault {key!r}; known: {', '.join(sorted(_SETTERS))}")
            setter(staged, value, now)
        for key, value in vars(staged).items():
            if key != "rng":
                setattr(self, key, value)

    def _fold_flat_keys(self, data: dict[str, Any], now: float) -> dict[str, Any]:
        """Accept ``late_create_seconds=5`` etc. as parts of ``late_create``/``block``."""
        folded = {k: v for k, v in data.items() if k not in _FLAT_KEYS}
        current = self.to_json(now)
        for key, (group, part) in _FLAT_KEYS.items():
            if key not in data:
                continue
            if not isinstance(folded.get(group), dict):
                base = folded.get(group) if group in folded else current[group]
                folded[group] = dict(base) if isinstance(base, dict) else {}
            folded[group][part] = data[key]
        return folded


_FLAT_KEYS = {
    "late_create_seconds": ("late_create", "seconds"),
    "late_create_drop": ("late_create", "drop"),
    "late_create_count": ("late_create", "count"),
    "block_status": ("block", "status"),
    "block_seconds": ("block", "seconds"),
    "block_retry_after": ("block", "retry_after"),
    "name_collapse": ("names", "collapse"),
    "name_case": ("names", "case"),
    "name_cut": ("names", "cut"),
}


def _number(value: Any, name: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name} must be a number")
    if value < low or (high is not None and value > high):
        raise FaultError(f"{name} must be in {low}..{high if high is not None else 'inf'}")
    return float(value)


def _check_group(value: Any, name: str, keys: tuple[str, ...], forms: str) -> None:
    """A fault given as an object may hold only ``keys``; ``forms`` names the other forms."""
    if not isinstance(value, dict):
        raise FaultError(f"{name} must be {forms}{{{', '.join(keys)}}}")
    unknown = set(value) - set(keys)
    if unknown:
        raise FaultError(f"unknown {name} keys: {', '.join(sorted(unknown))}")


def _set_error_rate(f: Faults, value: Any, _now: float) -> None:
    f.error_rate = _number(value, "error_rate", 0, 1)


def _set_error_status(f: Faults, value: Any, _now: float) -> None:
    status = int(_number(value, "error_status", 500, 599))
    f.error_status = status


def _set_error_funcs(f: Faults, value: Any, _now: float) -> None:
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise FaultError("error_funcs must be a list of func names or null")
    f.error_funcs = None if value is None else list(value)


def _set_error_seed(f: Faults, value: Any, _now: float) -> None:
    f.rng.seed(int(_number(value, "error_seed", 0)))


def _set_block(f: Faults, value: Any, now: float) -> None:
    if value is None or value is False:
        f.block_status = f.block_until = f.block_retry_after = None
        return
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"status": value}
    _check_group(value, "block", ("status", "seconds", "retry_after"), "null, a status, or ")
    status = value.get("status", 460)
    if status not in BLOCK_STATUSES:
        raise FaultError(f"block status must be one of {BLOCK_STATUSES}")
    seconds = value.get("seconds")
    retry_after = value.get("retry_after")
    f.block_status = int(status)
    f.block_until = None if seconds is None else now + _number(seconds, "block.seconds", 0)
    f.block_retry_after = (
        None if retry_after is None else int(_number(retry_after, "block.retry_after", 0))
    )


def _set_latency(f: Faults, value: Any, _now: float) -> None:
    f.latency = _number(value, "latency", 0, 600)


def _set_late_create(f: Faults, value: Any, _now: float) -> None:
    if value is None or value is False:
        f.late_create_seconds, f.late_create_drop, f.late_create_count = 0.0, False, None
        return
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = {"seconds": value}
    _check_group(value, "late_create", ("seconds", "drop", "count"), "null, seconds, or ")
    drop = value.get("drop", False)
    if not isinstance(drop, bool):
        raise FaultError("late_create.drop must be true or false")
    seconds = _number(value.get("seconds", 0), "late_create.seconds", 0, 600)
    if seconds <= 0 and not drop:
        raise FaultError("late_create needs seconds > 0 or drop: true")
    count = value.get("count")
    f.late_create_seconds = seconds
    f.late_create_drop = drop
    f.late_create_count = None if count is None else int(_number(count, "late_create.count", 0))


def _set_outage(f: Faults, value: Any, _now: float) -> None:
    if value is False:
        value = None
    if value is True:
        value = "reset"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is not None and value not in OUTAGE_MODES:
        raise FaultError(f"outage must be null or one of {OUTAGE_MODES}")
    f.outage = value


def _set_names(f: Faults, value: Any, _now: float) -> None:
    if value is None or value is False:
        f.name_collapse, f.name_case, f.name_cut = False, None, None
        return
    _check_group(value, "names", ("collapse", "case", "cut"), "null or ")
    collapse = value.get("collapse", False)
    if not isinstance(collapse, bool):
        raise FaultError("names.collapse must be true or false")
    case = value.get("case")
    if case is not None and case not in NAME_CASES:
        raise FaultError(f"names.case must be null or one of {NAME_CASES}")
    cut = value.get("cut")
    f.name_collapse = collapse
    f.name_case = case
    f.name_cut = None if cut is None else int(_number(cut, "names.cut", 1, 100))


def _set_listing_delay(f: Faults, value: Any, _now: float) -> None:
    f.listing_delay = _number(value, "listing_delay", 0, 3600)


def _set_two_factor(f: Faults, value: Any, _now: float) -> None:
    if not isinstance(value, bool):
        raise FaultError("two_factor must be true or false")
    f.two_factor = value


def _mode_or_none(value: Any, name: str, modes: tuple[str, ...]) -> str | None:
    """A fault that is off (null or false) or one of its modes."""
    if value is None or value is False:
        return None
    if value not in modes:
        raise FaultError(f"{name} must be null or one of {modes}")
    return str(value)


def _set_hostile(f: Faults, value: Any, _now: float) -> None:
    f.hostile = _mode_or_none(value, "hostile", HOSTILE_MODES)


def _set_backup_runs(f: Faults, value: Any, _now: float) -> None:
    if value is None or value is False:
        f.backup_run_mode, f.backup_run_seconds = None, 0.0
        f.backup_run_instances = f.backup_run_count = None
        return
    if isinstance(value, str):
        value = {"mode": value}
    _check_group(
        value, "backup_runs", ("mode", "seconds", "instances", "count"), "null, a mode, or "
    )
    mode = value.get("mode")
    if mode not in BACKUP_RUN_MODES:
        raise FaultError(f"backup_runs.mode must be one of {BACKUP_RUN_MODES}")
    seconds = _number(value.get("seconds", 0), "backup_runs.seconds", 0, 7 * 24 * 3600)
    if mode == "late" and seconds <= 0:
        raise FaultError("backup_runs of mode late needs seconds > 0")
    instances = value.get("instances")
    if instances is not None and (
        not isinstance(instances, list) or not all(isinstance(i, str) for i in instances)
    ):
        raise FaultError("backup_runs.instances must be a list of instance ids or null")
    count = value.get("count")
    f.backup_run_mode = mode
    f.backup_run_seconds = seconds if mode == "late" else 0.0
    f.backup_run_instances = None if instances is None else list(instances)
    f.backup_run_count = None if count is None else int(_number(count, "backup_runs.count", 0))


def _set_group_delete(f: Faults, value: Any, _now: float) -> None:
    f.group_delete = _mode_or_none(value, "group_delete", GROUP_DELETE_MODES)


_SETTERS = {
    "error_rate": _set_error_rate,
    "error_status": _set_error_status,
    "error_funcs": _set_error_funcs,
    "error_seed": _set_error_seed,
    "block": _set_block,
    "latency": _set_latency,
    "late_create": _set_late_create,
    "outage": _set_outage,
    "names": _set_names,
    "listing_delay": _set_listing_delay,
    "two_factor": _set_two_factor,
    "hostile": _set_hostile,
    "backup_runs": _set_backup_runs,
    "group_delete": _set_group_delete,
}
