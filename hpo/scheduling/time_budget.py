"""``[study] time_budget``: after it, workers stop claiming new work.

A budget is seconds (``7200``) or a duration (``"90s"``, ``"45m"``, ``"2h"``,
``"1h30m"``), counted from when the study was created. A worker that reaches it
finishes the stint it holds (the epochs in flight, to the trial's next rung)
and claims nothing more; the study stays resumable, and raising the budget in
the study file (it is not part of the spec hash) lets workers go on.
"""

from __future__ import annotations

import re

from model.config import ConfigError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([smhd]))+")


def parse_duration(value, source: str, key: str = "study.time_budget") -> float:
    """Seconds > 0 from a number or a string like "2h", "1h30m", "90s"; a ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(source, key, f"expected seconds or a duration like \"2h\", got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not DURATION.fullmatch(text):
            raise ConfigError(source, key, f"expected seconds or a duration like \"2h\" or "
                              f"\"1h30m\", got {value!r}")
        seconds = sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhd])", text))
    else:
        seconds = float(value)
    if not seconds > 0:
        raise ConfigError(source, key, f"expected a duration > 0, got {value!r}")
    return seconds


def may_claim(study_started_at: float, now: float, budget_seconds: float | None) -> bool:
    """May a worker claim new work now? Always without a budget; before it runs out otherwise."""
    return budget_seconds is None or now - study_started_at < budget_seconds
