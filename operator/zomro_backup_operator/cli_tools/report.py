"""The doctor's report: findings, round trips and recommended settings, as text or JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from zomro_backup_operator.cli_tools.access import ExitCode

Level = Literal["ok", "note", "problem"]


@dataclass
class Finding:
    """One line of the report: what was checked, and how it came out."""

    level: Level
    where: str
    message: str


@dataclass
class Recommendation:
    variable: str
    value: str | None
    """None: no value can be recommended from what was seen."""
    why: str


@dataclass
class Report:
    api_url: str
    credentials: str
    mode: str
    findings: list[Finding] = field(default_factory=list)
    write_test: list[Finding] = field(default_factory=list)
    round_trips: dict[str, list[float]] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    fatal: ExitCode | None = None
    interrupted: str | None = None
    provider_clock: str | None = None
    """What the answers told of the provider's clock, if anything."""
    concurrency: Literal["refused", "served", "failed", "unknown"] = "unknown"
    """Two calls at once on one session: what Zomro did."""

    def add(self, level: Level, where: str, message: str) -> None:
        self.findings.append(Finding(level, where, message))

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.fatal is not None:
            return self.fatal
        if any(f.level == "problem" for f in [*self.findings, *self.write_test]):
            return ExitCode.PROBLEMS
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "credentials": self.credentials,
            "mode": self.mode,
            "exit_code": int(self.exit_code),
            "interrupted": self.interrupted,
            "instances": self.instances,
            "findings": [asdict(f) for f in self.findings],
            "write_test": [asdict(f) for f in self.write_test] or None,
            "round_trips": {
                func: _stats(times) for func, times in sorted(self.round_trips.items())
            },
            "recommendations": [asdict(r) for r in self.recommendations],
        }

    def render(self) -> str:
        lines = [
            f"zomro-backup-operator doctor: {self.api_url} "
            f"(credentials: {self.credentials}, {self.mode})",
            "",
        ]
        sections = (
            ("Worked", [f for f in self.findings if f.level == "ok"]),
            ("Unexpected", [f for f in self.findings if f.level != "ok"]),
            ("Write test", self.write_test),
        )
        for title, findings in sections:
            if not findings:
                continue
            lines.append(title)
            lines += [f"  {f.level:<8}{f.where}: {f.message}" for f in findings]
            lines.append("")
        if self.round_trips:
            lines.append("Round trips (seconds)")
            for func, times in sorted(self.round_trips.items()):
                s = _stats(times)
                lines.append(
                    f"  {func:<40}{s['calls']:>3} call{'s' if s['calls'] > 1 else ' '}  "
                    f"median {s['median']:.3f}  "
                    f"max {s['max']:.3f}"
                )
            lines.append("")
        if self.recommendations:
            lines.append("Recommended settings")
            for r in self.recommendations:
                setting = f"{r.variable}={r.value}" if r.value is not None else r.variable
                lines.append(f"  {setting:<36}{r.why}")
            lines.append("")
        problems = sum(f.level == "problem" for f in [*self.findings, *self.write_test])
        notes = sum(f.level == "note" for f in [*self.findings, *self.write_test])
        ending = f"interrupted by {self.interrupted}; " if self.interrupted else ""
        lines.append(
            f"Result: {ending}{problems} problem(s), {notes} note(s) (exit {int(self.exit_code)})"
        )
        return "\n".join(lines) + "\n"


def _stats(times: list[float]) -> dict[str, Any]:
    return {
        "calls": len(times),
        "median": round(statistics.median(times), 4),
        "max": round(max(times), 4),
    }
