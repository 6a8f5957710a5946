"""Writing a report: the page of a study, its default path, the optuna-dashboard copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

from hpo.report.collect import ReportData, collect
from hpo.report.figures import build_figures
from hpo.report.page import render_page
from hpo.service import optuna_link

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


def save_to_dashboard(name: str, storage_url: str, figure) -> str:
    """Store the survivor curves in the study for optuna-dashboard (overwrites the last copy)."""
    from optuna_dashboard import save_plotly_graph_object  # only with --to-dashboard

    study = optuna.load_study(study_name=name, storage=optuna_link.optuna_storage(storage_url))
    return save_plotly_graph_object(study, figure, graph_object_id=DASHBOARD_GRAPH_ID)
