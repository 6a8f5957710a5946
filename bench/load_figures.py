"""The figures and checks of one bench/load.py run, from its database, logs and timing files."""

from __future__ import annotations

import math
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

TRACEBACK = "Traceback (most recent call last)"
REFUSED = "PostgreSQL refused a connection"  # hpo/service/db.py, once per worker per outage


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else math.nan


@dataclass
class Figures:
    setting: str = ""
    workers: int = 0
    makespan: float = 0.0
    wall: float = 0.0
    claims: int = 0  # claims that got a trial
    claim_calls: list[float] = field(default_factory=list)  # seconds, every claim transaction
    renewals: list[float] = field(default_factory=list)  # seconds, every lease renewal
    takeovers: int = 0
    kills: int = 0
    peak_connections: int = 0
    median_connections: float = 0.0
    max_connections: int = 0
    refused_lines: int = 0
    refused_workers: int = 0
    duplicate_epochs: int = 0
    kept_epochs: int = 0
    planned_epochs: int = 0
    failed_trials: int = 0
    open_trials: int = 0
    tracebacks: int = 0
    bad_exits: list[int] = field(default_factory=list)  # exit codes of workers not killed
    same_as_alone: bool = False

    @property
    def ok(self) -> bool:
        return (self.duplicate_epochs == 0 and self.failed_trials == 0 and self.tracebacks == 0
                and self.open_trials == 0 and not self.bad_exits and self.same_as_alone
                and self.kept_epochs == self.planned_epochs)

    def lines(self) -> list[str]:
        ms = lambda v: "-" if math.isnan(v) else f"{1000 * v:.1f} ms"  # noqa: E731  (none timed)
        per_worker = self.peak_connections / self.workers if self.workers else math.nan
        return [
            f"load: {self.setting}",
            f"claims: {self.claims} in a makespan of {self.makespan:.1f} s = "
            f"{self.claims / self.makespan:.1f} claims/s ({len(self.claim_calls)} claim "
            f"transactions, {len(self.claim_calls) / self.makespan:.0f}/s; wall {self.wall:.1f} s)",
            f"claim latency: p50 {ms(percentile(self.claim_calls, 0.5))}, p99 "
            f"{ms(percentile(self.claim_calls, 0.99))}; lease renewal latency: p50 "
            f"{ms(percentile(self.renewals, 0.5))}, p99 {ms(percentile(self.renewals, 0.99))} "
            f"({len(self.renewals)} renewals)",
            f"lease takeovers: {self.takeovers} (workers SIGKILLed: {self.kills})",
            f"connections: peak {self.peak_connections} ({per_worker:.2f} per worker), median "
            f"{self.median_connections:.0f}; server max_connections {self.max_connections}; "
            f"refused: {self.refused_lines} line(s) from {self.refused_workers} worker(s)",
            f"duplicate epochs: {self.duplicate_epochs}; epochs kept {self.kept_epochs} of "
            f"{self.planned_epochs} planned; FAILED trials: {self.failed_trials}; unfinished "
            f"trials: {self.open_trials}; tracebacks in worker logs: {self.tracebacks}; workers "
            f"not killed that exited non-zero: {len(self.bad_exits)}",
            f"decisions: {'every study equal to its single-worker run' if self.same_as_alone else 'DIFFERENT from the single-worker runs'}",
            f"load: {'OK' if self.ok else 'FAILED'}: {self.duplicate_epochs} duplicate epochs, "
            f"{self.claims / self.makespan:.1f} claims/s, claim p99 "
            f"{ms(percentile(self.claim_calls, 0.99))}, renewal p99 "
            f"{ms(percentile(self.renewals, 0.99))}, {self.takeovers} takeovers, peak "
            f"{self.peak_connections} connections for {self.workers} workers",
        ]


def read_timings(folder: Path, figures: Figures) -> None:
    for path in sorted(folder.glob("timings-*.txt")):
        for line in path.read_text().splitlines():
            op, seconds, *flags = line.split()
            if op == "claim":
                figures.claim_calls.append(float(seconds))
                figures.claims += flags[0] == "1"
                figures.takeovers += flags[1] == "1"
            elif op == "renew":
                figures.renewals.append(float(seconds))


def read_logs(folder: Path, figures: Figures) -> None:
    for path in sorted(folder.glob("worker-*.log")):
        text = path.read_text(errors="replace")
        figures.tracebacks += text.count(TRACEBACK)
        refused = text.count(REFUSED)
        figures.refused_lines += refused
        figures.refused_workers += refused > 0


def read_database(url: str, figures: Figures) -> None:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        figures.duplicate_epochs = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT 1 FROM saan_epochs WHERE kept "
            "GROUP BY study, number, epoch HAVING count(*) > 1) AS twice")).scalar_one()
        figures.kept_epochs = conn.execute(sa.text(
            "SELECT count(*) FROM saan_epochs WHERE kept")).scalar_one()
        # Ours and Optuna's own record of a failed trial.
        figures.failed_trials = conn.execute(sa.text(
            "SELECT count(*) FROM saan_trials WHERE state = 'failed'")).scalar_one()
        figures.failed_trials += conn.execute(sa.text(
            "SELECT count(*) FROM trials WHERE state = 'FAIL'")).scalar_one()
        figures.open_trials = conn.execute(sa.text(
            "SELECT count(*) FROM saan_trials WHERE state NOT IN ('pruned', 'complete', 'failed')"
        )).scalar_one()
    engine.dispose()


def collect_figures(url: str, folder: Path, processes: list[subprocess.Popen], killed: set[int],
                    run: dict, together: dict, same: bool, planned: int) -> Figures:
    figures = Figures(makespan=together["makespan"], wall=run["wall"], kills=len(killed),
                      peak_connections=max(run["samples"]),
                      median_connections=statistics.median(run["samples"]),
                      max_connections=run["max_connections"], same_as_alone=same,
                      planned_epochs=planned)
    figures.bad_exits = [p.returncode for p in processes if p.pid not in killed and p.returncode]
    read_timings(folder, figures)
    read_logs(folder, figures)
    read_database(url, figures)
    return figures
