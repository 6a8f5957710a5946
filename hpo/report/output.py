"""Writing a report: the page of a study, its default path, the optuna-dashboard copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

from hpo.report.collect import ReportData, collect
from hpo.report.figures import build_figures, dashboard_figure
from hpo.report.page import render_page
from hpo.service import optuna_link

# What --to-dashboard stores: graph id -> (report figure, its title there). The
# timeline is there because the dashboard's own counts a trial paused at a rung
# as running (Optuna's trial spans its whole life); ours shows training only.
DASHBOARD_GRAPHS = {
    "saan-survivor-curves": ("survivor-curves", "Survivor curves (x: pruned there, star: winner)"),
    "saan-worker-timeline": ("worker-timeline", "Workers: epochs trained (pauses at a rung are gaps)"),
}
DASHBOARD_GRAPH_ID = "saan-survivor-curves"


def default_output(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "study"
    return Path("reports") / f"{safe}.html"


def render(name: str, storage_url: str) -> tuple[str, ReportData, dict[str, Any]]:
    """The page, the data it shows and its figures (by id)."""
    data = collect(name, storage_url)
    figures = build_figures(data)
    return render_page(data, figures), data, figures


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_to_dashboard(name: str, storage_url: str, figures: dict[str, Any]) -> list[str]:
    """Store the survivor curves and the worker timeline in the study for optuna-dashboard.

    Each overwrites its last copy; sized for the dashboard's panel.
    """
    from optuna_dashboard import save_plotly_graph_object  # only with --to-dashboard

    study = optuna.load_study(study_name=name, storage=optuna_link.optuna_storage(storage_url))
    return [save_plotly_graph_object(study, dashboard_figure(figures[figure_id], title),
                                     graph_object_id=graph_id)
            for graph_id, (figure_id, title) in DASHBOARD_GRAPHS.items()]
