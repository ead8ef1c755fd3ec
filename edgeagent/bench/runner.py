"""`run_bench`: a grid of cells, each stage in its own process, into one results file.

Every cell runs the same protocol through the backend-neutral `Session` (DESIGN.md: the bench
never asks which backend it runs). The parent only plans (`grid`), spawns and watches
(`process`, `cells`) and records (`results`, with a journal for `--resume`): a crash, hang or
memory blow-up in a cell becomes that cell's status and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..progress import Steps
from .cells import RunContext, baselines, limits_for, run_cell
from .config import BenchConfig
from .grid import Cell, plan_cells, workload_spec
from .process import stage_timeouts
from .results import Journal, ResultsError, assemble, journal_path, write_results


def _fingerprint(config: BenchConfig, cells: Sequence[Cell], target) -> dict[str, Any]:
    return {"cells": [c.name for c in cells], "models": {c.model["name"]: c.model.get("sha256") for c in cells},
            "protocol": dataclasses.asdict(config.protocol), "target": target.name,
            "workload": config.workload, "eval": str(config.eval) if config.eval else None,
            "options": {k: dict(v) for k, v in config.options.items()}}


def work_folder(out: Path) -> Path:
    """The run's scratch folder: `.<results name>.work` beside the results file."""
    return out.parent / f".{out.name}.work"


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the grid and return the results document (also written to `config.out`).

    Raises:
        InputError: unknown backend, precision, target or workload; a bad model path; a journal
            from another run (without --resume, or with other settings).
    """
    from ..targets import fit as target_fit, get_target

    config.protocol.check()
    out = Path(config.out)
    target = get_target(config.target)
    fit = target_fit(target)
    workload = workload_spec(config)
    cells = plan_cells(config, target, fit)
    timeouts = stage_timeouts(config.protocol, config.timeouts)

    journal = Journal(journal_path(out))
    fingerprint = _fingerprint(config, cells, target)
    done: dict[str, dict[str, Any]] = {}
    if config.resume and journal.exists():
        done = journal.read(fingerprint)
    elif journal.exists():
        raise ResultsError(f"{journal.path} holds an interrupted run; pass --resume to continue it or "
                           "delete the file to start again", field="resume")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        journal.start(fingerprint)

    # Beside the results, not in $TMPDIR: a killed run's folder (compiled artifacts, logs, worker
    # specs) is found and removed by the next run, --resume or not.
    workdir = work_folder(out)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    context = RunContext(config, target, fit, workload, timeouts, limits_for(target, fit),
                         started=_dt.datetime.now(_dt.UTC), workdir=workdir)
    context.baselines = baselines([c.backend for c in cells if not c.skip], context)
    progress = Steps(len(cells), "bench", unit="cell", enabled=config.progress)
    try:
        for cell in cells:
            progress.describe(cell.name)
            if cell.name in done:
                progress.done(f"{cell.name}: done before the resume")
                continue
            record = run_cell(cell, context)
            journal.record(record)
            done[cell.name] = record
            write_results(out, assemble(context, cells, done, complete=False))
            progress.done(f"{cell.name}: {record['status']}")
    finally:
        progress.close()
        shutil.rmtree(context.workdir, ignore_errors=True)  # compiled artifacts and cell logs
    document = assemble(context, cells, done, complete=True)
    write_results(out, document)
    journal.remove()
    return document
