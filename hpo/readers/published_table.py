"""``saan-hpo table`` beside the published figures: the published row and (ours - published).

For a study that reproduces a published experiment (hpo/readers/published.py: the study's
name picks the published tables), every row of the comparison table gets the
columns ``published`` (source and label of the published row), then for
accuracy, PLCC and SRCC ``published_<score>`` and ``diff_<score>`` = ours minus
published. A trial with no published counterpart keeps them empty; one with two
(the ablation's rows as the paper reports them and as the blog retested them) is
listed once per counterpart. Any other study's table is returned unchanged.
"""

from __future__ import annotations

import math
from typing import Any

from hpo.readers.published import (COMPARED_COLUMNS, LABEL_COLUMN, SCORES, Published, differences,
                           matching_rows, rows_for_study)
from hpo.readers.table import axis_columns


def with_published(frame, spec, published: Published | None):
    """``frame`` (hpo.readers.table.study_table of ``spec``'s study) with the published columns."""
    import pandas as pd

    rows = rows_for_study(published, spec.name) if published is not None else []
    if not rows:
        return frame
    columns = axis_columns(spec.grid)
    out = []
    for record in frame.to_dict("records"):
        params = {axis: _plain(record[column]) for axis, column in columns.items()}
        measured = {s: record.get(s) for s in SCORES}
        matched = matching_rows(rows, spec, params)
        if not matched:
            out.append({**record, LABEL_COLUMN: "",
                        **{c: math.nan for c in COMPARED_COLUMNS if c != LABEL_COLUMN}})
        for row in matched:
            diff = differences(measured, row)
            extra = {LABEL_COLUMN: row.title}
            for s in SCORES:
                extra[f"published_{s}"], extra[f"diff_{s}"] = row.scores[s], diff[s]
            out.append({**record, **extra})
    return pd.DataFrame(out, columns=[*frame.columns, *COMPARED_COLUMNS])


def _plain(value: Any) -> Any:
    """numpy scalars (pandas cells) as the Python values study files hold."""
    return value.item() if hasattr(value, "item") else value
