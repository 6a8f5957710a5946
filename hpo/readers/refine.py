"""``refine``: a finished grid study's winner's neighbourhood, as a new study file.

The new file keeps the stored study's objective, rung ladder (eta, rungs,
min_epochs, schedule) and run settings; its [space] is
hpo.scheduling.refine.refined_space around the winner and its scheduler is
``hyperband-sync`` with as many brackets as the user's budget of epochs buys.
"""

from __future__ import annotations

from model.config import dump_toml, toml_value
from model.errors import SaanError
from hpo.readers.export import winner
from hpo.scheduling.refine import brackets_within, refined_space
from hpo.scheduling.spec import SPACE_KINDS
from hpo.service import db


class CannotRefine(SaanError):
    pass


def refine_text(name: str, storage_url: str, budget: int | None, sampler: str = "tpe",
                seed: int = 0, new_name: str | None = None) -> tuple[str, dict]:
    """The study file's text and a summary (name, space, brackets, planned epochs)."""
    spec, best = winner(name, storage_url)
    if spec.scheduler.kind in SPACE_KINDS:
        grid = {axis: [value] for axis, value in best.params.items()}  # not a grid: keep the point
        raise CannotRefine(f"study {name!r} is a {spec.scheduler.kind} study over a [space]: refine "
                           f"reads a grid study (its winner: {grid})")
    s = spec.scheduler
    budget = spec.planned_epochs() if budget is None else budget
    brackets = brackets_within(s.eta, s.rungs, s.min_epochs, s.schedule, budget)
    if brackets == 0:
        from hpo.scheduling.hyperband_sync import HyperbandSync

        first = HyperbandSync("hyperband-sync", s.eta, s.rungs, s.min_epochs, s.schedule,
                              n_brackets=1).planned_epochs()
        raise CannotRefine(f"--budget: {budget} epochs buy no bracket of eta {s.eta}, rungs "
                           f"{s.rungs} (the first needs {first})")
    space = refined_space(spec.grid, best.params)
    new_name = new_name or f"{name}-refined"
    run = spec.run.to_mapping()
    for axis in space:  # the space varies them; a fixed value beside it would be dead
        section, _, field = axis.rpartition(".")
        for table in ([run[section]] if section else run.values()):
            table.pop(field, None)
    header = (f"Refinement of study {name!r} ({db.mask_url(storage_url)}): trial {best.number} "
              f"won with {spec.metric} {best.value:.6g} at {best.params};\n"
              f"one grid step either side of it, {brackets} hyperband-sync brackets "
              f"within a budget of {budget} epochs. Written by saan-hpo refine.")
    study = {"name": new_name, "metric": spec.metric, "direction": spec.direction,
             "description": f"neighbourhood of {name}'s winner, trial {best.number}"}
    scheduler = {"kind": "hyperband-sync", "eta": s.eta, "rungs": s.rungs,
                 "min_epochs": s.min_epochs, "schedule": s.schedule, "brackets": brackets,
                 "sampler": sampler, "seed": seed}
    text = dump_toml({"study": study}, header=header)
    # dotted settings (model.norm) must be quoted keys, or TOML reads them as tables
    text += "\n[space]\n" + "".join(
        f"{_key(axis)} = {toml_value(dim.to_mapping())}\n" for axis, dim in space.items())
    text += "\n" + dump_toml({"scheduler": scheduler, **{k: v for k, v in run.items() if v}})
    from hpo.scheduling.spec import spec_from_mapping  # the file must load as written
    import tomllib

    planned = spec_from_mapping(tomllib.loads(text), "refine").planned_epochs()
    return text, {"name": new_name, "space": space, "brackets": brackets, "planned": planned,
                  "winner": best.number, "params": best.params}


def _key(axis: str) -> str:
    return f'"{axis}"' if "." in axis else axis
