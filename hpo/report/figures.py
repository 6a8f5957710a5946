"""The report's plotly figures, built from a :class:`hpo.report.collect.ReportData` snapshot.

Every string a figure shows that came from the study (parameter values, worker
hosts) is HTML-escaped first: plotly renders titles, labels and hover text as
a small subset of HTML. The study's name is never put into a figure at all.
"""

from __future__ import annotations

import datetime as dt
import html
import statistics
from typing import Any

import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
OUTCOME_STYLE = {  # rung ladder: marker per outcome
    "survived": dict(symbol="circle", color="#2ca02c", size=11),
    "pruned": dict(symbol="x", color="#d62728", size=11),
    "pending": dict(symbol="circle-open", color="#7f7f7f", size=11),
    "finished": dict(symbol="diamond", color="#1f77b4", size=12),
}
FIGURE_IDS = ("survivor-curves", "rung-ladder", "grid-map", "budget", "worker-timeline")
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=30, t=60, b=50), hoverlabel=dict(align="left"))


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped: for figures and the page alike."""
    return html.escape(fmt(value), quote=True)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{esc(k)}={esc(v)}" for k, v in params.items())


def build_figures(data) -> dict[str, go.Figure]:
    return {"survivor-curves": survivor_curves(data), "rung-ladder": rung_ladder(data),
            "grid-map": grid_map(data), "budget": budget(data), "worker-timeline": worker_timeline(data)}


# ---- styles shared by the figures: colour by the first grid axis, dash by the second ----------
def _style_index(data, params: dict[str, Any], axis: int) -> int:
    axes = data.axes
    if axis >= len(axes):
        return 0
    values = data.spec.grid[axes[axis]]
    try:
        return values.index(params.get(axes[axis]))
    except ValueError:
        return 0


def colour_of(data, params) -> str:
    return PALETTE[_style_index(data, params, 0) % len(PALETTE)]


def dash_of(data, params) -> str:
    return DASHES[_style_index(data, params, 1) % len(DASHES)]


# ---- 1. survivor curves ---------------------------------------------------------------------
def survivor_curves(data) -> go.Figure:
    spec, metric = data.spec, esc(data.spec.metric)
    winner = data.winner.number if data.winner else None
    fig = go.Figure()
    for trial in data.trials:
        if not trial.values:
            continue
        epochs, values = list(trial.values), list(trial.values.values())
        is_winner = trial.number == winner
        end_symbol, end_size = "circle", 6
        if is_winner:
            end_symbol, end_size = "star", 18
        elif trial.state == "pruned":
            end_symbol, end_size = "x", 11
        elif trial.label in ("running", "paused", "waiting"):
            end_symbol, end_size = "circle-open", 9
        status = trial.label + (" (winner)" if is_winner else "")
        where = f"pruned at epoch {trial.epochs}" if trial.state == "pruned" else status
        text = [f"<b>trial {trial.number}</b><br>{params_text(trial.params)}<br>epoch {e}<br>"
                f"{metric} {v:.4f}<br>{esc(where)}" for e, v in zip(epochs, values)]
        fig.add_trace(go.Scatter(
            x=epochs, y=values, mode="lines+markers", name=f"#{trial.number} {params_text(trial.params)}",
            text=text, hovertemplate="%{text}<extra></extra>",
            line=dict(color=colour_of(data, trial.params), dash=dash_of(data, trial.params),
                      width=5 if is_winner else 1.6),
            marker=dict(symbol=["circle"] * (len(epochs) - 1) + [end_symbol],
                        size=[4] * (len(epochs) - 1) + [end_size],
                        color=colour_of(data, trial.params),
                        line=dict(width=1, color="#222" if is_winner else colour_of(data, trial.params))),
            opacity=1.0 if is_winner or winner is None else 0.75,
            meta={"trial": trial.number, "state": trial.state, "winner": is_winner}))
    for k, boundary in enumerate(spec.boundaries):
        fig.add_vline(x=boundary, line=dict(color="#999", width=1, dash="dot"),
                      annotation_text=f"rung {k}", annotation_position="top",
                      annotation_font_size=10, annotation_yshift=-14 * (k % 2))
    if not fig.data:
        _empty(fig, "no trial has reported an epoch yet")
    axes = data.axes
    style = f"colour: {esc(axes[0])}" + (f", dash: {esc(axes[1])}" if len(axes) > 1 else "")
    fig.update_layout(**LAYOUT, height=560,
                      title=f"Survivor curves: validation {metric} per epoch ({style}; "
                            "x: pruned there, star: winner)",
                      xaxis_title="epoch", yaxis_title=f"validation {metric}",
                      legend=dict(font_size=10, title_text="trial"))
    fig.update_xaxes(range=[0.5, spec.final_epoch + 0.5])
    return fig


# ---- 2. rung ladder -------------------------------------------------------------------------
def rung_ladder(data) -> go.Figure:
    metric = esc(data.spec.metric)
    trials = data.by_number
    winner = data.winner.number if data.winner else None
    fig = go.Figure()
    path_x, path_y = [], []  # each trial's climb, rung to rung
    positions: dict[int, list[tuple[int, float]]] = {}
    for view in data.rungs:
        for entry in view.entries:
            positions.setdefault(entry.trial, []).append((view.rung, entry.value))
    for points in positions.values():
        if len(points) > 1:
            path_x += [p[0] for p in points] + [None]
            path_y += [p[1] for p in points] + [None]
    if path_x:
        fig.add_trace(go.Scatter(x=path_x, y=path_y, mode="lines", hoverinfo="skip",
                                 line=dict(color="#ccc", width=1), showlegend=False))
    for outcome, style in OUTCOME_STYLE.items():
        xs, ys, labels, hover = [], [], [], []
        for view in data.rungs:
            for entry in view.entries:
                if entry.outcome != outcome:
                    continue
                trial = trials[entry.trial]
                xs.append(view.rung)
                ys.append(entry.value)
                labels.append(f"#{entry.trial}")
                hover.append(f"<b>trial {entry.trial}</b><br>{params_text(trial.params)}<br>"
                             f"rung {view.rung} at epoch {view.epoch}<br>{metric} {entry.value:.4f}"
                             f"<br>{outcome}" + (" (winner)" if entry.trial == winner else ""))
        if xs:
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers+text", name=outcome, text=labels, customdata=hover,
                textposition="middle right", textfont_size=9, hovertemplate="%{customdata}<extra></extra>",
                marker=dict(symbol=style["symbol"], color=style["color"], size=style["size"])))
    for view in data.rungs:
        kept = sum(e.outcome in ("survived", "finished") for e in view.entries)
        verdict = f"{kept} of {len(view.entries)} kept" if view.decided else \
            f"{len(view.entries)} in, undecided"
        fig.add_annotation(x=view.rung, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                           text=verdict, font_size=10)
    if not data.rungs:
        _empty(fig, "no trial has reached a rung boundary yet")
    ticks = list(range(len(data.spec.boundaries)))
    fig.update_layout(**LAYOUT, height=480,
                      title=f"Rung ladder: {metric} at each boundary, who went on (eta {data.spec.scheduler.eta})",
                      yaxis_title=f"validation {metric} at the boundary")
    fig.update_xaxes(tickvals=ticks, ticktext=[f"rung {k}<br>epoch {e}" for k, e in
                                               zip(ticks, data.spec.boundaries)],
                     range=[-0.5, len(ticks) - 0.3])
    fig.update_layout(margin=dict(t=80))
    return fig


# ---- 3. grid map ----------------------------------------------------------------------------
def rung_reached(boundaries: list[int], epochs: int) -> int:
    """Index of the last boundary a trial reached; -1 before the first."""
    return sum(b <= epochs for b in boundaries) - 1


def grid_map(data) -> go.Figure:
    axes, grid, boundaries = data.axes, data.spec.grid, data.spec.boundaries
    x_labels = [esc(v) for v in grid[axes[0]]]
    rest = axes[1:]
    rows: list[tuple] = []
    for point in data.spec.grid_points():
        key = tuple(point[a] for a in rest)
        if key not in rows:
            rows.append(key)
    y_labels = [", ".join(esc(v) for v in key) if key else "-" for key in rows]
    z = [[None] * len(x_labels) for _ in rows]
    text = [[""] * len(x_labels) for _ in rows]
    hover = [[""] * len(x_labels) for _ in rows]
    winner = data.winner.number if data.winner else None
    for trial in data.trials:
        if trial.params.keys() != set(axes):
            continue
        col = grid[axes[0]].index(trial.params[axes[0]])
        row = rows.index(tuple(trial.params[a] for a in rest))
        reached = rung_reached(boundaries, trial.epochs)
        z[row][col] = reached
        star = "★ " if trial.number == winner else ""
        last = f"{trial.last_value:.3f}" if trial.last_value is not None else "-"
        text[row][col] = f"{star}#{trial.number}<br>rung {reached}<br>{last}" if reached >= 0 else \
            f"#{trial.number}<br>{'not started' if not trial.values else last}"
        hover[row][col] = (f"<b>trial {trial.number}</b><br>{params_text(trial.params)}<br>"
                           f"{trial.epochs} epochs, rung {reached}<br>last {esc(data.spec.metric)} {last}"
                           f"<br>{esc(trial.label)}" + (" (winner)" if star else ""))
    fig = go.Figure(go.Heatmap(
        x=x_labels, y=y_labels, z=z, text=text, customdata=hover, texttemplate="%{text}",
        hovertemplate="%{customdata}<extra></extra>", zmin=-1, zmax=len(boundaries) - 1,
        colorscale="Viridis", xgap=2, ygap=2,
        colorbar=dict(title="rung reached", tickvals=list(range(-1, len(boundaries))))))
    fig.update_layout(**LAYOUT, height=max(320, 90 * len(rows) + 140),
                      title="Grid map: the rung each configuration reached and its last value",
                      xaxis_title=esc(axes[0]), yaxis_title=", ".join(esc(a) for a in rest) or "")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


# ---- 4. budget and worker timeline ------------------------------------------------------------
def _when(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).replace(tzinfo=None)


def budget(data) -> go.Figure:
    spec = data.spec
    fig = go.Figure()
    records = sorted(data.epochs, key=lambda r: r.finished_at)
    if records:
        times = [_when(records[0].started_at)] + [_when(r.finished_at) for r in records]
        fig.add_trace(go.Scatter(
            x=times, y=list(range(len(records) + 1)), mode="lines", line_shape="hv", name="epochs spent",
            customdata=[""] + [f"trial {r.number} epoch {r.epoch}" + ("" if r.kept else " (lost lease)")
                               for r in records],
            hovertemplate="%{x}<br>%{y} epochs spent<br>%{customdata}<extra></extra>"))
    else:
        _empty(fig, "no epoch trained yet")
    plan_word = "planned" if spec.policy.plan_is_exact else "upper bound"
    for level, label, dash in ((spec.planned_epochs(), f"plan: {spec.planned_epochs()} ({plan_word})", "dash"),
                               (spec.full_grid_epochs(), f"full grid: {spec.full_grid_epochs()}", "dot")):
        fig.add_hline(y=level, line=dict(dash=dash, color="#555"), annotation_text=label,
                      annotation_position="top left")
    fig.update_layout(**LAYOUT, height=420,
                      title=f"Budget: {len(records)} epochs spent, against the plan and the full grid",
                      xaxis_title="wall-clock time (UTC)", yaxis_title="epochs")
    fig.update_yaxes(range=[0, spec.full_grid_epochs() * 1.05])
    return fig


def stints(records) -> list[list]:
    """Consecutive epochs of one trial on one worker, merged into one bar."""
    durations = [r.finished_at - r.started_at for r in records] or [0.0]
    slack = 1.0 + 0.5 * statistics.median(durations)
    merged: list[list] = []
    last_of_worker: dict[str, list] = {}
    for record in sorted(records, key=lambda r: (r.started_at, r.epoch)):
        current = last_of_worker.get(record.worker)
        if (current is not None and current[-1].number == record.number
                and current[-1].epoch + 1 == record.epoch and current[-1].kept == record.kept
                and record.started_at - current[-1].finished_at <= slack):
            current.append(record)
            continue
        current = [record]
        merged.append(current)
        last_of_worker[record.worker] = current
    return merged


def worker_timeline(data) -> go.Figure:
    trials = data.by_number
    boundaries = set(data.spec.boundaries)
    last_epoch = {t.number: t.epochs for t in data.trials}
    labels = {w: f"{esc(label)} [{esc(w[-6:])}]" for w, label in data.workers.items()}
    bars = stints(data.epochs)
    fig = go.Figure()
    if bars:
        base, width, y, colour, text, hover, line = [], [], [], [], [], [], []
        for bar in bars:
            first, last = bar[0], bar[-1]
            trial = trials.get(first.number)
            params = trial.params if trial else {}
            base.append(_when(first.started_at))
            width.append(max(1.0, (last.finished_at - first.started_at) * 1000.0))
            y.append(labels.get(first.worker, esc(first.worker)))
            colour.append(colour_of(data, params))
            line.append("#d62728" if not first.kept else "#333")
            span = f"{first.epoch}" if first.epoch == last.epoch else f"{first.epoch}-{last.epoch}"
            text.append(f"#{first.number} e{span}")
            note = ""
            if not first.kept:
                note = "<br>not kept: the lease was lost, another worker redid it"
            elif last.epoch in boundaries and last.epoch < last_epoch.get(first.number, 0):
                note = f"<br>paused at epoch {last.epoch}, resumed later"
            hover.append(f"<b>trial {first.number}</b><br>{params_text(params)}<br>epochs {span}<br>"
                         f"{(last.finished_at - first.started_at):.1f}s" + note)
        fig.add_trace(go.Bar(
            orientation="h", base=base, x=width, y=y, text=text, customdata=hover,
            textposition="inside", insidetextanchor="middle", textfont_size=9, name="stints",
            hovertemplate="%{customdata}<extra></extra>",
            marker=dict(color=colour, line=dict(color=line, width=1))))
    else:
        _empty(fig, "no epoch trained yet")
    fig.update_layout(**LAYOUT, height=max(260, 70 * max(1, len(set(labels.values()))) + 140),
                      title="Workers: which trial each one trained when (gaps: waiting, paused, idle)",
                      xaxis_title="wall-clock time (UTC)", showlegend=False, bargap=0.3)
    fig.update_xaxes(type="date")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def _empty(fig: go.Figure, message: str) -> None:
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font_size=14, font_color="#777")
