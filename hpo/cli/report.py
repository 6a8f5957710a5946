"""``saan-hpo report --study NAME --storage URL [-o FILE.html] [--open] [--to-dashboard] [--png DIR]``.

Writes one self-contained HTML file (plotly.js inlined: it opens offline) of a
running study (a snapshot) or a finished one. ``--to-dashboard`` also stores
the survivor curves in the study for optuna-dashboard; ``--png DIR`` writes
each figure as a PNG through kaleido, which needs a local Chrome/Chromium.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hpo.cli.options import add_study_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_name(parser)
    parser.add_argument("-o", "--output", metavar="FILE.html",
                        help="where to write the report (default: reports/<study>.html)")
    parser.add_argument("--open", action="store_true", help="open the report in the default browser")
    parser.add_argument("--to-dashboard", action="store_true",
                        help="also store the survivor curves in the study for optuna-dashboard")
    parser.add_argument("--png", metavar="DIR",
                        help="also write each figure as DIR/<figure>.png (kaleido and Chrome/Chromium)")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs: the parser imports every command (hpo/cli/__init__.py).
    from hpo.report import png
    from hpo.report.output import default_output, render, save_to_dashboard, write_atomically

    browser = png.check_png_export() if args.png else None  # fail before writing anything
    started = time.perf_counter()
    page, data, figures = render(args.study, args.storage)
    output = Path(args.output) if args.output else default_output(args.study)
    write_atomically(output, page)
    seconds = time.perf_counter() - started
    state = "finished" if data.finished else "running (snapshot)"
    winner = f"winner trial {data.winner.number}" if data.winner else "no winner yet"
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {seconds:.2f}s): "
          f"{len(data.trials)} trials, {state}, {winner}")
    if args.to_dashboard:
        graph_id = save_to_dashboard(args.study, args.storage, figures["survivor-curves"])
        print(f"stored the survivor curves in the study for optuna-dashboard (graph {graph_id})")
    if browser is not None:
        paths = png.write_pngs(figures, Path(args.png), browser)
        print(f"wrote {len(paths)} PNGs to {args.png}/ ({', '.join(p.name for p in paths)})")
    if args.open:
        import webbrowser

        webbrowser.open(output.resolve().as_uri())
    return 0
