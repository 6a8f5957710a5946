"""The report's "Beside the published run" section, for a study with the published grid.

When a study's grid is the published successive-halving grid (hpo/readers/published.py:
same configurations, whatever the axis names or order), the report shows

- the published elimination ladder beside ours: at each rung, which
  configurations the publication eliminated and which our study did, and the
  ones only one of the two eliminated. The publication numbers its models
  batch-major; every configuration is shown as our trial number with the
  published model number beside it;
- the published winner's test scores beside our winner's, once ``saan-hpo table``
  or ``saan-hpo export --evaluate`` has stored them on the trial (hpo/readers/stored_scores.py).
"""

from __future__ import annotations


from hpo.report.figures import esc as e
from hpo.readers.published import SCORES, LadderComparison, compare_ladder, halving_trials, load_published_if_any

SECTION_ID = "section-published"
SCORE_TITLES = {"accuracy": "accuracy", "plcc": "PLCC", "srcc": "SRCC"}


def published_ladder(data) -> LadderComparison | None:
    """The published ladder beside a report's study, or None when the grids differ."""
    if data.spec.scheduler.kind == "none":
        return None  # nothing is eliminated: no ladder to compare
    published = load_published_if_any()
    if published is None:
        return None
    trial_of_model = halving_trials(published.halving, data.spec)
    if trial_of_model is None:
        return None
    measured_out = {r.rung: [x.trial for x in r.entries if x.outcome == "pruned"]
                    for r in data.rungs if r.decided}
    winner = data.winner.number if data.winner is not None else None
    return compare_ladder(published.halving, trial_of_model, list(data.spec.boundaries),
                          measured_out, winner, data.finished)


def published_section(data) -> str:
    ladder = getattr(data, "published", None)
    if ladder is None:
        return ""
    halving = ladder.halving
    model_of = ladder.model_of_trial
    params_of = {t.number: t.params for t in data.trials}

    def config(trial: int) -> str:
        params = ", ".join(f"{e(k)}={e(v)}" for k, v in params_of.get(trial, {}).items())
        return (f"<span class=\"cfg\" data-trial=\"{trial}\" title=\"{params}\">"
                f"trial {trial} = model {model_of[trial]}</span>")

    def configs(trials, fate=None) -> str:
        if not trials:
            return "none"
        return ", ".join(config(t) + (f" ({fate(t)})" if fate else "") for t in trials)

    rows = []
    for r in ladder.rungs:
        ours = configs(r.measured_out) if r.decided else "not decided yet"
        if r.agree is None:
            verdict = ""
        elif r.agree:
            verdict = "same"
        else:
            verdict = ("differ: only published " + configs(r.only_published, _ours(ladder))
                       + "; only ours " + configs(r.only_measured, _theirs(ladder)))
        epochs = f"{r.published_epochs} / {r.measured_epochs if r.measured_epochs is not None else '-'}"
        rows.append(f"<tr data-rung=\"{r.rung}\"><td>{r.rung} (iteration {r.rung + 1})</td><td>{epochs}</td>"
                    f"<td class=\"published-out\">{configs(r.published_out)}</td>"
                    f"<td class=\"measured-out\">{ours}</td><td class=\"verdict\">{verdict}</td></tr>")
    note = "" if ladder.same_epochs else (
        f"<p class=\"explain\"><b>Note:</b> our rungs compare after epochs "
        f"{', '.join(map(str, ladder.measured_rung_epochs))}, the publication's after "
        f"{', '.join(map(str, halving.boundaries))}.</p>")
    explain = (f"The published run ({e(halving.source)}: {e(halving.title)}) over the same "
               f"{len(ladder.trial_of_model)} configurations, eta {halving.eta}. Its models are "
               "numbered batch-major; each configuration is named by our trial number and the "
               "published model number (hover for its parameters).")
    return (f"<section id=\"{SECTION_ID}\">\n<h2>Beside the published run</h2>\n"
            f"<p class=\"explain\">{explain}</p>\n{note}"
            "<table id=\"published-ladder\" class=\"spec\"><thead><tr><th>rung</th>"
            "<th>epochs (published / ours)</th><th>eliminated, published</th>"
            "<th>eliminated, ours</th><th>agreement</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>\n" + _winners(data, ladder, config) + "</section>\n")


def _ours(ladder: LadderComparison):
    return lambda trial: f"ours: {ladder.measured_fate(trial)}"


def _theirs(ladder: LadderComparison):
    return lambda trial: f"published: {ladder.published_fate(trial)}"


def _winners(data, ladder: LadderComparison, config) -> str:
    halving = ladder.halving
    published = ladder.published_winner
    heads = "".join(f"<th>test {SCORE_TITLES[s]}</th>" for s in SCORES)
    rows = [f"<tr class=\"published-winner\"><th>published winner</th><td>{config(published)}</td>"
            f"<td>{halving.winner_epochs}</td>"
            + "".join(f"<td>{halving.winner_scores[s]:.4f}</td>" for s in SCORES) + "</tr>"]
    ours = ladder.measured_winner
    if ours is None:
        rows.append("<tr class=\"our-winner\"><th>our winner</th><td colspan=\"5\">none yet</td></tr>")
    else:
        epochs = data.by_number[ours].epochs if ours in data.by_number else ""
        label = "our winner" if ladder.winner_settled else "our best so far"
        stored = data.test_scores.get(ours)
        if stored is None:
            cells = ("<td colspan=\"3\">not scored on the test split yet: run <code>saan-hpo table"
                     "</code> or <code>saan-hpo export --evaluate</code></td>")
        else:
            scores, origin = stored
            cells = "".join(f"<td>{scores[s]:.4f}</td>" if s in scores else "<td></td>" for s in SCORES)
            cells += f"<td class=\"sub\">stored by {e(origin)}</td>"
        rows.append(f"<tr class=\"our-winner\"><th>{label}</th><td>{config(ours)}</td>"
                    f"<td>{epochs}</td>{cells}</tr>")
        if stored is not None:
            scores = stored[0]
            diffs = "".join(f"<td>{scores[s] - halving.winner_scores[s]:+.4f}</td>" if s in scores
                            else "<td></td>" for s in SCORES)
            rows.append(f"<tr class=\"difference\"><th>ours - published</th><td></td><td></td>{diffs}</tr>")
    same = ("the same configuration" if ours == published else
            "different configurations" if ours is not None else "")
    return (f"<p class=\"explain\">Winners: {same}.</p>\n" if same else "") + (
        "<table id=\"published-winner\" class=\"spec\"><thead><tr><th></th><th>configuration</th>"
        f"<th>epochs</th>{heads}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n")
