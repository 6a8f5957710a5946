"""The report page: header, figures, metrics table, in one self-contained HTML file.

plotly.js is inlined once (with the first figure), so the file opens offline.
Everything that came from the study -- its name, parameter values, worker
names, the storage URL (masked before it gets here) -- goes through
:func:`html.escape`; figure JSON is emitted by plotly, which escapes ``<``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

import plotly.io as pio

from hpo.readers.failures import describe
from hpo.report.figures import FIGURE_IDS, rung_reached
from hpo.report.figures import esc as e
from hpo.report.published import SECTION_ID, published_section

# The metrics table's last validation scores: (key in the trainer's metrics, heading).
VALIDATION_SCORE_COLUMNS = (("accuracy", "accuracy"), ("plcc", "PLCC"), ("srcc", "SRCC"),
                            ("mse", "MSE"))
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

SECTIONS = {
    "survivor-curves": ("Survivor curves", "The validation metric of every trial after every epoch, "
                        "as reported to Optuna. Dotted lines are the rung boundaries; a line that ends "
                        "in an x was pruned there; the thick line with a star is the winner. The axis "
                        "opens on the trials that survived rung 0; \u201call trials\u201d shows the "
                        "full range."),
    "rung-ladder": ("Rung ladder", "At each boundary, the trials compared and their values; the top "
                    "1/eta go on. Grey lines follow one trial up the ladder."),
    "rung-margins": ("Rung decisions", "Each rung's decision up close: the values compared there, "
                     "sorted, those who went on above the dashed cut. The margin is the gap between "
                     "the last trial kept and the best one cut."),
    "grid-map": ("Grid map", "Each configuration of the grid: the rung it reached and its last value."),
    "budget": ("Budget", "Epochs trained over wall-clock time, against the plan (the axis runs to the "
               "plan; the full grid's epochs are named in the title)."),
    "worker-timeline": ("Workers", "Which trial each worker trained when; a bar is a stint of "
                        "consecutive epochs. Gaps are pauses at a rung, waits, or idle workers. "
                        "Gangs are shown: a trial trained by a gang has a bar on its holder's row "
                        "and a lighter, hatched one on each member's; hovering names the gang's "
                        "size, holder and members."),
}

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;
padding:0 24px 48px;color:#222}
header{border-bottom:1px solid #ddd;padding:12px 0 8px}
h1{font-size:1.5em;margin:.4em 0 .2em;word-break:break-all}
h2{font-size:1.2em;margin:1.6em 0 .2em}
.sub{color:#666;margin:0 0 .8em}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85em;background:#eef}
.state.running{background:#fff3cd}.state.finished{background:#d4edda}
table{border-collapse:collapse;font-size:.9em}
table.spec td,table.spec th{padding:2px 12px 2px 0;text-align:left;vertical-align:top}
table.spec th{color:#555;font-weight:600}
#winner{margin:.8em 0;padding:8px 12px;background:#fffbe6;border:1px solid #f0e0a0;border-radius:6px}
nav a{margin-right:14px}
#metrics-table th,#metrics-table td{border-bottom:1px solid #eee;padding:3px 10px;text-align:right}
#metrics-table th{cursor:pointer;user-select:none;background:#f6f6f6;position:sticky;top:0}
#metrics-table th[aria-sort=ascending]::after{content:" \\25B2"}
#metrics-table th[aria-sort=descending]::after{content:" \\25BC"}
#metrics-table td.text,#metrics-table th.text{text-align:left}
#metrics-table tr.winner td{background:#fffbe6;font-weight:600}
.explain{color:#555;margin:.2em 0 .4em;max-width:60em}
footer{color:#888;font-size:.8em;margin-top:3em}
"""

# Click a heading to sort by that column (numbers as numbers; blanks last either way).
SORTER = """
(function(){
  var table=document.getElementById('metrics-table'); if(!table) return;
  var heads=table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads,function(th,col){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
      function key(row){var c=row.cells[col];var v=c.getAttribute('data-sort');
        if(v===null) v=c.textContent; return v;}
      rows.sort(function(a,b){
        var x=key(a), y=key(b);
        if(x===''&&y==='') return 0; if(x==='') return 1; if(y==='') return -1;
        var nx=Number(x), ny=Number(y), r;
        r=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
        return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
"""


def render_page(data, figures: dict) -> str:
    name = e(data.spec.name)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             f"<title>{name} - saan-hpo report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
             header(data), nav(figures, data.published is not None)]
    first = True
    for figure_id in FIGURE_IDS:
        if figure_id not in figures:
            continue
        title, explain = SECTIONS[figure_id]
        div = pio.to_html(figures[figure_id], full_html=False, include_plotlyjs=first,
                          div_id=figure_id, config=PLOT_CONFIG)
        first = False
        parts.append(f"<section id=\"section-{figure_id}\">\n<h2>{title}</h2>\n"
                     f"<p class=\"explain\">{explain}</p>\n{div}\n</section>\n")
    parts.append(published_section(data))
    parts.append(failures_section(data))
    parts.append(metrics_table(data))
    parts.append(f"<footer>saan-hpo report of study {name}, generated "
                 f"{_utc(data.generated_at)}.</footer>\n<script>{SORTER}</script>\n</body>\n</html>\n")
    return "".join(parts)


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def header(data) -> str:
    spec = data.spec
    counts = Counter(t.label for t in data.trials)
    if data.finished:
        state = "<span class=\"state finished\">finished</span>"
    else:
        state = (f"<span class=\"state running\">running</span> snapshot taken {_utc(data.generated_at)}")
    summary = ", ".join(f"{n} {e(label)}" for label, n in sorted(counts.items()))
    grid = "<br>".join(f"{e(axis)} = [{', '.join(e(v) for v in values)}]"
                       for axis, values in spec.grid.items())
    scheduler = e(spec.policy.describe())
    spent = len(data.epochs)
    lost = sum(not r.kept for r in data.epochs)
    first_row = ("grid", grid + f" <span class=\"sub\">({len(spec.grid_points())} configurations)</span>")
    if spec.sampled:  # a space: its distributions, and how many configurations the plan draws
        space = "<br>".join(f"{e(axis)} = {e(dim.to_mapping())}" for axis, dim in spec.space.items())
        first_row = ("space", space + f" <span class=\"sub\">({spec.n_configurations()} "
                     f"configurations drawn by {e(spec.policy.sampler)})</span>")
    rows = [
        first_row,
        ("scheduler", scheduler),
        ("rung boundaries", "epochs " + ", ".join(str(b) for b in spec.boundaries)),
        ("objective", f"validation {e(spec.metric)} ({e(spec.direction)})"),
        ("trials", summary or "none"),
        ("epochs", f"{spent} spent" + (f" ({lost} lost to expired leases)" if lost else "")
         + f" of {spec.planned_epochs()} planned; "
         + ("every configuration to the end" if spec.sampled else "full grid")
         + f" {spec.full_grid_epochs()}"),
        ("storage", f"<code>{e(data.storage)}</code>"),
    ]
    spec_rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (f"<header>\n<h1 id=\"study-name\">{e(spec.name)}</h1>\n"
            f"<p class=\"sub\">saan-hpo study report &middot; {state}</p>\n"
            f"<table class=\"spec\">{spec_rows}</table>\n{winner_box(data)}\n</header>\n")


def winner_box(data) -> str:
    best = data.winner
    if best is None:
        why = "no trial has completed yet" if not data.finished else "no trial completed"
        return f"<div id=\"winner\" data-trial=\"\">Winner: none &mdash; {why}.</div>"
    label = "Winner" if data.finished else "Best so far"
    scores = ", ".join(f"{title} {best.metrics[key]:.4f}" for key, title in VALIDATION_SCORE_COLUMNS
                       if key in best.metrics)
    params = ", ".join(f"{e(k)} = {e(v)}" for k, v in best.params.items())
    value = f"{best.value:.4f}" if best.value is not None else "-"
    return (f"<div id=\"winner\" data-trial=\"{best.number}\"><b>{label}: trial {best.number}</b> "
            f"({params}) &mdash; validation {e(data.spec.metric)} {value} after {best.epochs} epochs"
            + (f"<br>validation scores: {scores}" if scores else "") + "</div>")


def nav(figures: dict, published: bool = False) -> str:
    links = [f"<a href=\"#section-{fid}\">{SECTIONS[fid][0]}</a>" for fid in FIGURE_IDS if fid in figures]
    if published:
        links.append(f"<a href=\"#{SECTION_ID}\">Published run</a>")
    links.append("<a href=\"#section-metrics\">Metrics</a>")
    return "<nav>" + "".join(links) + "</nav>\n"


def metrics_table(data) -> str:
    axes = data.axes
    winner = data.winner.number if data.winner else None
    heads = (["<th>trial</th>"] + [f"<th>{e(a)}</th>" for a in axes]
             + ["<th class=\"text\">state</th>", "<th>epochs</th>", "<th>rung</th>",
                f"<th>last {e(data.spec.metric)}</th>"]
             + [f"<th>{title}</th>" for _, title in VALIDATION_SCORE_COLUMNS])
    body = []
    for t in data.trials:
        reached = rung_reached(data.spec.boundaries, t.epochs)
        cells = [_num(t.number, str(t.number))]
        cells += [_num(t.params.get(a), e(t.params.get(a, ""))) for a in axes]
        cells.append(f"<td class=\"text\">{e(t.label)}</td>")
        cells.append(_num(t.epochs, str(t.epochs)))
        cells.append(_num(reached if t.values else None, str(reached) if t.values else ""))
        last = t.last_value
        shown = "" if last is None else f"{last:.4f}" if math.isfinite(last) else "non-finite"
        cells.append(_num(last if last is None or math.isfinite(last) else None, shown))
        for key, _ in VALIDATION_SCORE_COLUMNS:
            value = t.metrics.get(key)
            cells.append(_num(value, f"{value:.4f}" if value is not None else ""))
        css = " class=\"winner\"" if t.number == winner else ""
        body.append(f"<tr data-trial=\"{t.number}\"{css}>" + "".join(cells) + "</tr>")
    return (f"<section id=\"section-metrics\">\n<h2>Metrics</h2>\n<p class=\"explain\">Every trial "
            f"with its last reported validation scores (blank: not reported). Click a heading to sort."
            f"</p>\n<table id=\"metrics-table\"><thead><tr>{''.join(heads)}</tr></thead>\n<tbody>\n"
            + "\n".join(body) + "\n</tbody></table>\n</section>\n")


def failures_section(data) -> str:
    """Trials whose runs raised: FAILED for good (and which rung went on without them) or retried."""
    rows = []
    decided = {r.rung for r in data.rungs if r.decided}
    for t in data.trials:
        if t.error is None:
            continue
        if t.service_state == "failed":
            what = "FAILED"
            if data.spec.policy.pauses_at_rungs and t.service_rung is not None:
                verdict = ("was decided over the other trials" if t.service_rung in decided
                           else "will be decided over the other trials")
                what += f"; rung {t.service_rung} (epoch {data.spec.boundaries[t.service_rung]}) {verdict}"
        elif t.service_state in ("complete", "pruned"):
            what = "recovered after a retry from its checkpoint"
        else:
            what = "being retried from its checkpoint"
        rows.append(f"<li data-trial=\"{t.number}\"><b>trial {t.number}</b> "
                    f"({e(', '.join(f'{k}={v}' for k, v in t.params.items()))}): {what}. "
                    f"{e(describe(t.error))}</li>")
    if not rows:
        return ""
    return ("<section id=\"section-failures\">\n<h2>Failures</h2>\n<p class=\"explain\">Trials "
            "whose training raised. A run that raises is retried from its last checkpoint up to "
            f"[study] max_retries times, then FAILED; a rung with FAILED members "
            "is decided over the rest.</p>\n<ul>" + "\n".join(rows) + "</ul>\n</section>\n")


def _num(value: Any, shown: str) -> str:
    """A cell sorted by its number when it has one, else by its text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td data-sort=\"{e(value) if value is not None else ''}\">{shown}</td>"
    return f"<td data-sort=\"{value!r}\">{shown}</td>"
