"""The report's plotly figures, built from a :class:`hpo.report.collect.ReportData` snapshot.

Every string a figure shows that came from the study (parameter values, worker
hosts) is HTML-escaped first: plotly renders titles, labels and hover text as
a small subset of HTML. The study's name is never put into a figure at all.
"""

from __future__ import annotations

import datetime as dt
import html
import math
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
FIGURE_IDS = ("survivor-curves", "rung-ladder", "rung-margins", "grid-map", "budget", "worker-timeline")
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
            "rung-margins": rung_margins(data), "grid-map": grid_map(data), "budget": budget(data),
            "worker-timeline": worker_timeline(data)}


# ---- styles shared by the figures: colour by the first grid axis, dash by the second ----------
def _style_index(data, params: dict[str, Any], axis: int) -> int:
    axes = data.axes
    if axis >= len(axes):
        return 0
    values = data.spec.grid.get(axes[axis])
    if values is None:  # a space: its choices style like a grid axis, a range does not
        values = list(data.spec.space[axes[axis]].choices)
    try:
        return values.index(params.get(axes[axis]))
    except ValueError:
        return 0


def colour_of(data, params) -> str:
    return PALETTE[_style_index(data, params, 0) % len(PALETTE)]


def dash_of(data, params) -> str:
    return DASHES[_style_index(data, params, 1) % len(DASHES)]


# ---- 1. survivor curves ---------------------------------------------------------------------
def survivors_of_first_rung(data) -> set[int]:
    """Trials that went on from rung 0 (empty before rung 0 has a survivor)."""
    first = next((view for view in data.rungs if view.rung == 0), None)
    if first is None:
        return set()
    return {e.trial for e in first.entries if e.outcome in ("survived", "finished")}


def padded(low: float, high: float, share: float = 0.08, least: float = 0.005) -> list[float]:
    pad = max((high - low) * share, least)
    return [low - pad, high + pad]


def survivor_band(data) -> tuple[list[float], list[float]] | None:
    """(survivors' y-range, every trial's y-range), or None when they would be the same.

    Rung-0 losers often score far below the rest (a learning rate that has not
    moved the model yet), and an axis spanning them squeezes the trials that
    matter -- the ones still competing -- into a thin band. So the survivor
    curves open on the values of the trials that survived rung 0; a button
    switches to the full range.
    """
    kept = survivors_of_first_rung(data)
    everything = [v for t in data.trials for v in t.values.values() if math.isfinite(v)]
    band = [v for t in data.trials if t.number in kept for v in t.values.values() if math.isfinite(v)]
    if not band or not everything:
        return None
    full = padded(min(everything), max(everything))
    survivors = padded(min(band), max(band))
    if survivors[0] <= full[0] and survivors[1] >= full[1]:
        return None
    return survivors, full


def survivor_curves(data) -> go.Figure:
    spec, metric = data.spec, esc(data.spec.metric)
    winner = data.winner.number if data.winner else None
    fig = go.Figure()
    ends = []  # pruned trials' last points, drawn again on top of every line
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
            ends.append(trial)
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
                      width=3 if is_winner else 1.6),
            marker=dict(symbol=["circle"] * (len(epochs) - 1) + [end_symbol],
                        size=[4] * (len(epochs) - 1) + [end_size],
                        color=colour_of(data, trial.params),
                        line=dict(width=1, color="#222" if is_winner else colour_of(data, trial.params))),
            opacity=1.0 if is_winner or winner is None else 0.8,
            meta={"trial": trial.number, "state": trial.state, "winner": is_winner}))
    if ends:  # last in the list: plotly draws it above the winner's line
        fig.add_trace(go.Scatter(
            x=[t.epochs for t in ends], y=[t.last_value for t in ends], mode="markers",
            name="pruned here", showlegend=False, hovertemplate="%{text}<extra></extra>",
            text=[f"<b>trial {t.number}</b> pruned at epoch {t.epochs}<br>{params_text(t.params)}<br>"
                  f"{metric} {t.last_value:.4f}" for t in ends],
            marker=dict(symbol="x", size=13, color=[colour_of(data, t.params) for t in ends],
                        line=dict(width=1.5, color="#222")),
            meta={"pruned_ends": [t.number for t in ends]}))
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
    fig.update_layout(margin=dict(t=90))
    fig.update_xaxes(range=[0.5, spec.final_epoch + 0.5])
    band = survivor_band(data)
    if band is not None:
        survivors, full = band
        fig.update_yaxes(range=survivors)
        fig.update_layout(updatemenus=[dict(
            type="buttons", direction="right", showactive=True, active=0,
            x=1, xanchor="right", y=1.0, yanchor="bottom", pad=dict(b=24), font_size=11,
            buttons=[dict(label="survivors of rung 0", method="relayout", args=[{"yaxis.range": survivors}]),
                     dict(label="all trials", method="relayout", args=[{"yaxis.range": full}])])])
    return fig


def dashboard_figure(fig: go.Figure, title: str) -> go.Figure:
    """A report figure sized for optuna-dashboard's panel (450 px high, half the page wide).

    The dashboard draws a stored figure into a fixed-height box with the
    figure's own layout: a taller figure loses its x axis, a long title runs
    off the side, and a 16-entry legend leaves no room for the plot. Hover
    text names every trial, so the legend goes; the width follows the panel.
    """
    small = go.Figure(fig)
    small.update_layout(height=430, width=None, autosize=True, showlegend=False,
                        margin=dict(l=55, r=15, t=78, b=45),
                        title=dict(text=title, font_size=14, x=0.01, xanchor="left", y=0.98, yanchor="top"))
    if small.layout.updatemenus:
        small.update_layout(updatemenus=[dict(small.layout.updatemenus[0].to_plotly_json(),
                                              x=1, xanchor="right", pad=dict(b=18))])
    return small


# ---- 2. rung ladder -------------------------------------------------------------------------
LADDER_HEIGHT = 480
LADDER_PLOT_PX = LADDER_HEIGHT - 130  # the plot area between the margins
LABEL_PX = 13  # a 9 px label and a little air
SLOT_WIDTH = 0.15  # x offset between neighbouring labels in one rung (rungs are 1 apart)


def dodge(values: list[float], gap: float) -> list[int]:
    """A slot per value (0, 1, -1, 2, -2, ...) so that values closer than ``gap`` never share one.

    Rung 0 often holds a dozen values within a hair of each other; drawn in one
    column their "#n" labels print over each other. Each value takes the first
    slot whose last value is at least ``gap`` away -- a beeswarm, sorted by value.
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    last_in_slot: dict[int, float] = {}
    slots = [0] * len(values)
    for i in order:
        k = 0
        while True:
            slot = (k + 1) // 2 * (1 if k % 2 else -1) if k else 0
            if slot not in last_in_slot or values[i] - last_in_slot[slot] >= gap:
                break
            k += 1
        last_in_slot[slot] = values[i]
        slots[i] = slot
    return slots


def ladder_positions(data) -> dict[tuple[int, int], float]:
    """(rung, trial) -> x: the rung index, nudged sideways where labels would collide."""
    values = [e.value for view in data.rungs for e in view.entries if math.isfinite(e.value)]
    span = (max(values) - min(values)) if values else 1.0
    gap = max(span, 1e-9) * 1.1 * LABEL_PX / LADDER_PLOT_PX
    positions = {}
    for view in data.rungs:
        slots = dodge([e.value if math.isfinite(e.value) else 0.0 for e in view.entries], gap)
        width = min(SLOT_WIDTH, 0.45 / max(1, *map(abs, slots)))  # stay clear of the next rung
        for entry, slot in zip(view.entries, slots):
            positions[(view.rung, entry.trial)] = view.rung + width * slot
    return positions


def rung_ladder(data) -> go.Figure:
    metric = esc(data.spec.metric)
    trials = data.by_number
    winner = data.winner.number if data.winner else None
    at = ladder_positions(data)
    fig = go.Figure()
    path_x, path_y = [], []  # each trial's climb, rung to rung
    climbs: dict[int, list[tuple[float, float]]] = {}
    for view in data.rungs:
        for entry in view.entries:
            climbs.setdefault(entry.trial, []).append((at[(view.rung, entry.trial)], entry.value))
    for points in climbs.values():
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
                xs.append(at[(view.rung, entry.trial)])
                ys.append(entry.value)
                labels.append(f"#{entry.trial}")
                hover.append(f"<b>trial {entry.trial}</b><br>{params_text(trial.params)}<br>"
                             f"rung {view.rung} at epoch {view.epoch}<br>{metric} {entry.value:.4f}"
                             f"<br>{outcome}" + (" (winner)" if entry.trial == winner else ""))
        if xs:
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers+text", name=outcome, text=labels, customdata=hover,
                textposition="middle right", textfont_size=9, hovertemplate="%{customdata}<extra></extra>",
                marker=dict(symbol=style["symbol"], color=style["color"], size=style["size"]),
                meta={"rungs": [round(x) for x in xs]}))
    for view in data.rungs:
        kept = sum(e.outcome in ("survived", "finished") for e in view.entries)
        verdict = f"{kept} of {len(view.entries)} kept" if view.decided else \
            f"{len(view.entries)} in, undecided"
        fig.add_annotation(x=view.rung, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                           text=verdict, font_size=10)
    if not data.rungs:
        _empty(fig, "no trial has reached a rung boundary yet")
    table = data.spec.policy.rung_table()  # brackets: each bracket's rungs, study-wide numbers
    ticks = [k for k, *_ in table]
    fig.update_layout(**LAYOUT, height=LADDER_HEIGHT,
                      title=f"Rung ladder: {metric} at each boundary, who went on (eta {data.spec.scheduler.eta})",
                      yaxis_title=f"validation {metric} at the boundary")
    fig.update_xaxes(tickvals=ticks, ticktext=[f"rung {k}<br>epoch {e}" for k, e, *_ in table],
                     range=[-0.6, len(ticks) - 0.3], showgrid=False)
    fig.update_layout(margin=dict(t=80))
    return fig


# ---- 2b. rung margins: each decision, the values compared and the cut ------------------------
MARGIN_STYLE = {"survived": ("circle", "#2ca02c"), "finished": ("diamond", "#1f77b4"),
                "pruned": ("x", "#d62728"), "pending": ("circle-open", "#7f7f7f")}


def ranked(view, maximize: bool) -> tuple[list, int]:
    """A rung's entries, those who went on first, each group best first; and how many went on."""
    def best_first(entry):
        bad = not math.isfinite(entry.value)  # NaN is worst either way
        return (bad, -entry.value if maximize and not bad else (entry.value if not bad else 0.0),
                entry.trial)

    kept = sorted((e for e in view.entries if e.outcome in ("survived", "finished")), key=best_first)
    rest = sorted((e for e in view.entries if e.outcome not in ("survived", "finished")), key=best_first)
    return kept + rest, len(kept)


def decision_margin(view, maximize: bool) -> tuple[Any, Any, float] | None:
    """(last kept, best cut, gap between them) of a decided rung that cut someone."""
    ordered, kept = ranked(view, maximize)
    cut = [e for e in ordered[kept:] if e.outcome == "pruned"]
    if not view.decided or kept == 0 or not cut:
        return None
    last, first_out = ordered[kept - 1], cut[0]
    return last, first_out, abs(last.value - first_out.value)


def rung_margins(data) -> go.Figure:
    """One panel per rung: the values compared there, sorted, and the cut between kept and pruned."""
    from plotly.subplots import make_subplots

    metric = esc(data.spec.metric)
    maximize = data.spec.direction == "maximize"
    views = [view for view in data.rungs if view.entries]
    if not views:
        fig = go.Figure()
        _empty(fig, "no trial has reached a rung boundary yet")
        fig.update_layout(**LAYOUT, height=320, title="Rung decisions")
        return fig
    titles = []
    for view in views:
        kept = sum(e.outcome in ("survived", "finished") for e in view.entries)
        margin = decision_margin(view, maximize)
        if margin is not None:
            last, out, gap = margin
            note = f"kept {kept} of {len(view.entries)}, margin {gap:.4f}"
        elif view.decided:
            note = f"kept {kept} of {len(view.entries)}"
        else:
            note = f"{len(view.entries)} in, undecided"
        titles.append(f"<b>rung {view.rung}</b> · epoch {view.epoch}<br>{note}")
    fig = make_subplots(rows=1, cols=len(views), subplot_titles=titles,
                        horizontal_spacing=min(0.08, 0.5 / len(views)))
    trials = data.by_number
    rows = max(len(view.entries) for view in views)
    for col, view in enumerate(views, start=1):
        ordered, kept = ranked(view, maximize)
        finite = [e.value for e in ordered if math.isfinite(e.value)] or [0.0]
        fig.add_trace(go.Scatter(
            x=[e.value for e in ordered], y=list(range(len(ordered))), mode="markers", showlegend=False,
            marker=dict(symbol=[MARGIN_STYLE[e.outcome][0] for e in ordered],
                        color=[MARGIN_STYLE[e.outcome][1] for e in ordered], size=10),
            customdata=[f"<b>trial {e.trial}</b><br>{params_text(trials[e.trial].params)}<br>"
                        f"rung {view.rung} at epoch {view.epoch}<br>{metric} {e.value:.4f}<br>{e.outcome}"
                        for e in ordered],
            hovertemplate="%{customdata}<extra></extra>",
            meta={"rung": view.rung, "trials": [e.trial for e in ordered], "kept": kept,
                  "values": [e.value for e in ordered]}), row=1, col=col)
        # Rows at a fixed pitch from the top in every panel, best first.
        fig.update_yaxes(range=[rows - 0.5, -0.5], tickvals=list(range(len(ordered))),
                         ticktext=[f"#{e.trial} {e.value:.4f}" for e in ordered], showgrid=False,
                         tickfont=dict(size=10, family="monospace"), zeroline=False, row=1, col=col)
        fig.update_xaxes(nticks=4, range=padded(min(finite), max(finite), share=0.12, least=0.002),
                         row=1, col=col)
        if decision_margin(view, maximize) is not None:
            suffix = "" if col == 1 else str(col)
            fig.add_shape(type="line", xref=f"x{suffix} domain", x0=0, x1=1, yref=f"y{suffix}",
                          y0=kept - 0.5, y1=kept - 0.5, line=dict(color="#d62728", width=1.5, dash="dash"))
    fig.update_layout(**LAYOUT, height=max(300, 20 * rows + 170), showlegend=False,
                      title=f"Rung decisions: the {metric} values compared at each rung, best first; "
                            "the dashed line is the cut (above: went on)")
    fig.update_layout(margin=dict(t=110, l=20, r=20))
    fig.update_annotations(font_size=11)
    return fig


# ---- 3. grid map ----------------------------------------------------------------------------
def rung_reached(boundaries: list[int], epochs: int) -> int:
    """Index of the last boundary a trial reached; -1 before the first."""
    return sum(b <= epochs for b in boundaries) - 1


def grid_map(data) -> go.Figure:
    if data.spec.sampled:
        return configuration_map(data)
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


def configuration_map(data) -> go.Figure:
    """A space study's grid map: every drawn configuration on the first two dimensions
    (log axes for log ranges), coloured by the budget level it reached."""
    spec, boundaries = data.spec, data.spec.boundaries
    axes = data.axes
    x_axis, y_axis = axes[0], (axes[1] if len(axes) > 1 else None)
    winner = data.winner.number if data.winner else None
    xs, ys, levels, text, hover = [], [], [], [], []
    for trial in data.trials:
        reached = rung_reached(boundaries, trial.epochs)
        last = f"{trial.last_value:.3f}" if trial.last_value is not None else "-"
        star = "★ " if trial.number == winner else ""
        xs.append(trial.params.get(x_axis))
        ys.append(trial.params.get(y_axis) if y_axis else trial.last_value)
        levels.append(reached)
        text.append(f"{star}#{trial.number}")
        hover.append(f"<b>trial {trial.number}</b><br>{params_text(trial.params)}<br>"
                     f"{trial.epochs} epochs, level {reached} (epoch "
                     f"{boundaries[reached] if reached >= 0 else 0})<br>last "
                     f"{esc(spec.metric)} {last}<br>{esc(trial.label)}" + (" (winner)" if star else ""))
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=text, textposition="top center", textfont_size=9,
        customdata=hover, hovertemplate="%{customdata}<extra></extra>",
        marker=dict(color=levels, colorscale="Viridis", cmin=-1, cmax=len(boundaries) - 1, size=11,
                    line=dict(width=[2 if t.number == winner else 0 for t in data.trials],
                              color="#d62728"),
                    colorbar=dict(title="level reached", tickvals=list(range(-1, len(boundaries)))))))
    if not data.trials:
        _empty(fig, "no configuration drawn yet")
    fig.update_layout(**LAYOUT, height=420,
                      title="Configurations drawn: the budget level each reached and its last value",
                      xaxis_title=esc(x_axis), yaxis_title=esc(y_axis) if y_axis else
                      f"last validation {esc(spec.metric)}")
    for axis, update in ((x_axis, fig.update_xaxes), (y_axis, fig.update_yaxes)):
        dim = spec.space.get(axis) if axis else None
        if dim is not None and dim.kind == "log_uniform":
            update(type="log")
        elif dim is not None and dim.kind == "choice":
            update(type="category")
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
    planned, full = spec.planned_epochs(), spec.full_grid_epochs()
    fig.add_hline(y=planned, line=dict(dash="dash", color="#555"),
                  annotation_text=f"plan: {planned} ({plan_word})", annotation_position="top left")
    # The axis runs to the plan: the full grid (496 against 80 for the demo) would
    # flatten the curve that matters. It is named, not drawn, unless it fits.
    top = max(planned, len(records)) * 1.12
    if full <= top:
        fig.add_hline(y=full, line=dict(dash="dot", color="#555"),
                      annotation_text=f"full grid: {full}", annotation_position="top left")
    fig.update_layout(**LAYOUT, height=420,
                      title=f"Budget: {len(records)} epochs spent of {planned} {plan_word} "
                            f"(the full grid would take {full})",
                      xaxis_title="wall-clock time (UTC)", yaxis_title="epochs")
    fig.update_yaxes(range=[0, top])
    return fig


def stints(records, pauses: set[int] = frozenset()) -> list[list]:
    """Consecutive epochs of one trial on one worker, merged into one bar.

    A bar never runs on past an epoch in ``pauses`` (the rung boundaries of
    synchronous halving): a trial paused there and resumed by the same worker
    soon after is two bars, so the time it waited is not drawn as training.
    Nor past a change of gang: a bar's hover names one gang (:func:`gang_note`).
    """
    durations = [r.finished_at - r.started_at for r in records] or [0.0]
    slack = 1.0 + 0.5 * statistics.median(durations)
    merged: list[list] = []
    last_of_worker: dict[str, list] = {}
    for record in sorted(records, key=lambda r: (r.started_at, r.epoch)):
        current = last_of_worker.get(record.worker)
        if (current is not None and current[-1].number == record.number
                and current[-1].epoch + 1 == record.epoch and current[-1].kept == record.kept
                and current[-1].epoch not in pauses
                and (current[-1].gang, holder_of(current[-1])) == (record.gang, holder_of(record))
                and record.started_at - current[-1].finished_at <= slack):
            current.append(record)
            continue
        current = [record]
        merged.append(current)
        last_of_worker[record.worker] = current
    return merged


def holder_of(record) -> str:
    return getattr(record, "holder", record.worker)  # a MemberEpoch names its holder


def gang_note(record, name) -> str:
    """``gang of 4 (holder w1; members w2, w3, w4)``, ``""`` for an epoch trained alone;
    ``name(worker_id)`` is how the figure names a worker (escaped)."""
    if not record.gang:
        return ""
    members = ", ".join(name(m) for m in record.gang)
    return f"gang of {len(record.gang) + 1} (holder {name(holder_of(record))}; members {members})"


def stint_bars(data, bars: list[list], labels: dict[str, str], member: bool) -> dict[str, list]:
    """The columns of one go.Bar trace: a holder's (or lone worker's) stints, or members'."""
    trials = data.by_number
    boundaries = set(data.spec.boundaries)
    last_epoch = {t.number: t.epochs for t in data.trials}
    short = lambda w: esc(w[-6:])  # noqa: E731 -- the id as the row labels end: [abc123]
    columns: dict[str, list] = {k: [] for k in ("base", "x", "y", "colour", "text", "hover", "line")}
    for bar in bars:
        first, last = bar[0], bar[-1]
        trial = trials.get(first.number)
        params = trial.params if trial else {}
        columns["base"].append(_when(first.started_at))
        columns["x"].append(max(1.0, (last.finished_at - first.started_at) * 1000.0))
        columns["y"].append(labels.get(first.worker, esc(first.worker)))
        columns["colour"].append(colour_of(data, params))
        columns["line"].append("#d62728" if not first.kept else "#333")
        span = f"{first.epoch}" if first.epoch == last.epoch else f"{first.epoch}-{last.epoch}"
        columns["text"].append(f"#{first.number} e{span}")
        note = ""
        if not first.kept:
            note = "<br>not kept: the lease was lost, another worker redid it"
        elif last.epoch in boundaries and last.epoch < last_epoch.get(first.number, 0):
            note = f"<br>paused at epoch {last.epoch}, resumed later"
        gang = gang_note(first, short)
        role = " (as gang member)" if member else ""
        columns["hover"].append(f"<b>trial {first.number}</b>{role}<br>{params_text(params)}<br>"
                                f"epochs {span}" + (f", {gang}" if gang else "") + "<br>"
                                f"{(last.finished_at - first.started_at):.1f}s" + note)
    return columns


def worker_timeline(data) -> go.Figure:
    labels = {w: f"{esc(label)} [{esc(w[-6:])}]" for w, label in data.workers.items()}
    pauses = set(data.spec.boundaries) if data.spec.policy.pauses_at_rungs else set()
    bars = stints(data.epochs, pauses)
    members = stints(data.member_epochs, pauses)
    fig = go.Figure()
    if bars:
        holders = stint_bars(data, bars, labels, member=False)
        fig.add_trace(go.Bar(
            orientation="h", base=holders["base"], x=holders["x"], y=holders["y"], text=holders["text"],
            customdata=holders["hover"], textposition="inside", insidetextanchor="middle",
            textfont_size=9, name="stints" if not members else "holder or alone",
            hovertemplate="%{customdata}<extra></extra>",
            marker=dict(color=holders["colour"], line=dict(color=holders["line"], width=1))))
    else:
        _empty(fig, "no epoch trained yet")
    if members:  # only a study that formed gangs: one without renders as it always did
        bars_of = stint_bars(data, members, labels, member=True)
        fig.add_trace(go.Bar(
            orientation="h", base=bars_of["base"], x=bars_of["x"], y=bars_of["y"], text=bars_of["text"],
            customdata=bars_of["hover"], textposition="inside", insidetextanchor="middle",
            textfont_size=9, name="as gang member", hovertemplate="%{customdata}<extra></extra>",
            meta={"gang_members": True}, opacity=0.55,  # the holder's colour, lighter and hatched
            marker=dict(color=bars_of["colour"], line=dict(color=bars_of["line"], width=1),
                        pattern=dict(shape="/", fgcolor="#fff", solidity=0.3))))
    title = "Workers: which trial each one trained when (gaps: waiting, paused, idle)"
    if members:
        title = ("Workers: which trial each one trained when, alone or in a gang (hatched: as a "
                 "gang member; gaps: waiting, paused, idle)")
    fig.update_layout(**LAYOUT, height=max(260, 70 * max(1, len(set(labels.values()))) + 140),
                      title=title, xaxis_title="wall-clock time (UTC)", showlegend=bool(members),
                      bargap=0.3)
    if members:  # two traces on one row would sit side by side, each half as thick
        fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(type="date")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def _empty(fig: go.Figure, message: str) -> None:
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font_size=14, font_color="#777")
