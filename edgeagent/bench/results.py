"""The results file: a versioned JSON document, written atomically, and its per-cell journal.

Schema "edgeagent.bench/1" (documented field by field in `results.schema.json` beside this
module) keeps pytest-benchmark's top-level names where they fit: `machine_info`,
`commit_info`, `datetime`, `version`, `benchmarks` (one entry per cell, each with `stats` in
seconds). The journal (`<out>.journal`, JSON lines) gets one line per finished cell, fsynced,
so a killed run resumes with `--resume` and no cell is run or recorded twice.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import safeio
from ..artifact import atomic_write_text
from ..errors import InputError

SCHEMA = "edgeagent.bench/1"
JOURNAL_SCHEMA = "edgeagent.bench.journal/1"
STATUSES = ("ok", "error", "crashed", "timeout", "oom", "skipped")
SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
MAX_RESULTS_BYTES = 256 << 20


class ResultsError(InputError):
    """A results file that does not parse or has another schema version."""


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


def write_results(out: Path, document: Mapping[str, Any]) -> None:
    """Write the results document atomically (temporary file, fsync, rename)."""
    atomic_write_text(out, json.dumps(document, indent=1, default=str) + "\n")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file and check its schema version.

    Raises:
        ResultsError: missing, unparsable, or another schema.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"results file {path} does not exist", field=str(path))
    # Python writes NaN where a statistic is undefined, so the results reader accepts it.
    document = safeio.read_json(
        path, what="results file", max_bytes=MAX_RESULTS_BYTES, allow_nan=True,
        error=lambda reason: ResultsError(f"results file {path} {reason}; was the run killed before it wrote "
                                          "the file? Rerun it with --resume", field=str(path)))
    if not isinstance(document, dict) or "schema" not in document:
        raise ResultsError(f"{path} is not an edgeagent bench results file (no 'schema' field)",
                           field=str(path))
    if document["schema"] != SCHEMA:
        raise ResultsError(f"{path} has schema {document['schema']!r}; this edgeagent reads {SCHEMA!r}. "
                           "Rerun the bench with this version or compare with the version that wrote it",
                           field="schema")
    if not isinstance(document.get("benchmarks"), list):
        raise ResultsError(f"{path}: 'benchmarks' must be a list of cells", field="benchmarks")
    for i, cell in enumerate(document["benchmarks"]):
        if not isinstance(cell, dict) or "name" not in cell or cell.get("status") not in STATUSES:
            raise ResultsError(f"{path}: benchmarks[{i}] lacks a name or a valid status "
                               f"({', '.join(STATUSES)})", field=f"benchmarks[{i}]")
    _validate(path, document)
    return document


@functools.cache
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _validate(path: Path, document: Mapping[str, Any]) -> None:
    """Check a results document against results.schema.json, naming the first problem's place.

    Raises:
        ResultsError: the document does not follow the schema (e.g. an ok cell without stats).
    """
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is None:
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    cell = ""
    parts = list(error.absolute_path)
    if len(parts) >= 2 and parts[0] == "benchmarks" and isinstance(parts[1], int):
        cell = f" (cell {document['benchmarks'][parts[1]].get('name')!r})"
    raise ResultsError(f"{path} does not follow the results schema {SCHEMA}: at {where or 'the top level'}{cell}: "
                       f"{error.message}; was it written by another tool or edited by hand? Rerun the bench",
                       field=where or "document")


class Journal:
    """Append-only record of finished cells, checked against the run's fingerprint on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def start(self, fingerprint: Mapping[str, Any]) -> None:
        self._append({"journal": JOURNAL_SCHEMA, "fingerprint": dict(fingerprint)}, mode="w")

    def read(self, fingerprint: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Finished cells by name; a torn last line (killed mid-write) is dropped.

        Raises:
            ResultsError: the journal belongs to a run with other settings.
        """
        def corrupt(number: int, reason: str) -> ResultsError:
            return ResultsError(f"journal {self.path} is corrupt at line {number + 1} ({reason}); delete it to "
                                "start the run again", field=str(self.path))

        text = safeio.read_text(self.path, max_bytes=MAX_RESULTS_BYTES, what="journal",
                                error=lambda reason: ResultsError(f"journal {self.path} {reason}; delete it to "
                                                                  "start the run again", field=str(self.path)))
        lines = text.splitlines()
        records = []
        for number, line in enumerate(lines):
            try:
                record = safeio.loads_json(line, allow_nan=True, error=lambda reason: ValueError(reason))
            except ValueError as exc:
                if number == len(lines) - 1 and not text.endswith("\n"):
                    break  # the write the kill interrupted
                raise corrupt(number, str(exc)) from None
            if number and not _is_cell_record(record):
                raise corrupt(number, "not a cell record with a name and a valid status")
            records.append(record)
        if not records or not isinstance(records[0], dict) or records[0].get("journal") != JOURNAL_SCHEMA \
                or not isinstance(records[0].get("fingerprint", {}), dict):
            raise ResultsError(f"{self.path} is not a bench journal ({JOURNAL_SCHEMA}); delete it",
                               field=str(self.path))
        recorded = records[0].get("fingerprint") or {}
        current = json.loads(json.dumps(dict(fingerprint), default=str))  # as the journal stored it
        if recorded != current:
            changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
            raise ResultsError(f"--resume with other settings than the interrupted run (differs in "
                               f"{changed}); rerun with the same arguments or delete {self.path}",
                               field="resume")
        return {r["cell"]["name"]: r["cell"] for r in records[1:]}

    def record(self, cell: Mapping[str, Any]) -> None:
        self._append({"cell": dict(cell)})

    def _append(self, record: Mapping[str, Any], mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _is_cell_record(record: Any) -> bool:
    cell = record.get("cell") if isinstance(record, dict) else None
    return isinstance(cell, dict) and isinstance(cell.get("name"), str) and cell.get("status") in STATUSES


def primary_metric(cell: Mapping[str, Any]) -> str | None:
    """The metric budgets, `compare` and `--precision auto` read: the one the cell's workload named
    (`primary_metric`), else, in files written before cells recorded it, the first one."""
    accuracy = cell.get("accuracy") or {}
    named = cell.get("primary_metric")
    if named in accuracy:
        return str(named)
    return next(iter(accuracy), None)


def assemble(context, cells, done: Mapping[str, dict[str, Any]], *, complete: bool) -> dict[str, Any]:
    """The results document from the finished cells, with budgets and fp32 deltas derived."""
    from .. import __version__
    from ..hostinfo import host_summary
    from .budgets import check_budgets
    from .provenance import commit_info

    config = context.config
    benchmarks = [dict(done[c.name]) for c in cells if c.name in done]
    _derive_accuracy_drop(benchmarks)
    for cell in benchmarks:
        cell["budgets"] = check_budgets(cell, context.target.budgets)
    return {
        "schema": SCHEMA, "complete": complete, "version": __version__,
        "datetime": context.started.isoformat(timespec="seconds"),
        "machine_info": host_summary(), "commit_info": commit_info(),
        "target": {**context.target.to_json(), "fit": context.fit.to_json(),
                   "emulated": context.fit.mode == "emulated",
                   "label": context.fit.reason if context.fit.mode == "emulated" else None,
                   "limits": context.limits.describe()},
        "settings": {"protocol": dataclasses.asdict(config.protocol), "timeouts": context.timeouts,
                     "workload": context.workload, "calibration": str(config.calibration) if config.calibration
                     else None, "options": {k: dict(v) for k, v in config.options.items()},
                     "argv": list(config.argv) if config.argv else None},
        "baselines": context.baselines,
        "benchmarks": benchmarks,
    }


def _derive_accuracy_drop(cells: list[dict[str, Any]]) -> None:
    """Accuracy drop of each cell against the fp32 cell of the same model (same backend first)."""
    fp32 = {}
    for cell in cells:
        if cell.get("precision") == "fp32" and cell.get("accuracy"):
            fp32.setdefault((cell["model"]["name"], cell["backend"]), cell)
            fp32.setdefault((cell["model"]["name"], None), cell)
    for cell in cells:
        metrics = cell.get("accuracy") or {}
        ref = fp32.get((cell["model"]["name"], cell["backend"])) or fp32.get((cell["model"]["name"], None))
        if not metrics or ref is None:
            continue
        cell["accuracy_drop"] = {k: ref["accuracy"][k] - v for k, v in metrics.items() if k in ref["accuracy"]}
        cell["accuracy_drop"]["reference"] = ref["name"]
