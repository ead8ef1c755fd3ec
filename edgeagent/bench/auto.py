"""`--precision auto`: measure the INT8 recipes a target's backends offer and keep the best.

Every candidate (fp32 and each backend's INT8 variants) is compiled and timed as a bench cell
in its own processes, on this machine, planned by the parent process. The fastest candidate
whose primary metric stays within the target's budget wins; the full table goes into the
artifact's manifest as `selection`. INT8 is never assumed to be faster: on CPUs without VNNI
some recipes are slower than fp32, and then fp32 wins and the table says why.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..artifact import Artifact, atomic_write_text, build_atomically, open_artifact
from ..backend import Precision, backend_entries
from ..errors import CalibrationError, InputError, UnsupportedModel
from ..progress import Steps
from .cells import RunContext, run_cell
from .config import BenchConfig, BenchProtocol
from .grid import Cell, cell_folder_name, model_entry
from .process import Limits, stage_timeouts
from .results import primary_metric


DEFAULT_MAX_DROP = 0.01


def candidates(target, backends: list[str] | None = None, device: str | None = None) -> list[dict[str, Any]]:
    """fp32 and INT8 variants for each of the target's backend presets usable here."""
    from ..targets import BackendPreset

    presets = list(target.backends) or [BackendPreset("onnxruntime")]
    if backends:
        presets = [p for p in presets if p.name in backends] or [BackendPreset(b) for b in backends]
    if device:
        presets = [p for p in presets if p.device in (device, None)]
    found = []
    for preset in presets:
        entry = backend_entries().get(preset.name)
        if entry is None or entry.backend is None or not entry.backend.available():
            continue
        capabilities = entry.backend.capabilities()
        base = {**dict(preset.options), **({"device": preset.device} if preset.device else {})}
        if preset.device and capabilities.devices and preset.device not in capabilities.devices:
            continue
        variants = entry.backend.int8_recipes()
        # Keys the variants set are recipe choices; the rest (device, threads, hints) apply to all.
        recipe_keys = {"int8"} | {k for _, options in variants for k in options}
        runtime = {k: v for k, v in base.items() if k not in recipe_keys}
        found.append({"backend": preset.name, "device": preset.device, "precision": "fp32", "recipe": "fp32",
                      "options": runtime})
        if Precision.INT8 in capabilities.precisions:
            if any(k in recipe_keys for k in base):  # the target's own recipe competes as it is
                found.append({"backend": preset.name, "device": preset.device, "precision": "int8",
                              "recipe": "target-preset", "options": base})
            for label, options in variants:
                found.append({"backend": preset.name, "device": preset.device, "precision": "int8",
                              "recipe": label, "options": {**runtime, **options}})
    if not found:
        raise InputError(f"target {target.name} has no backend usable here for --precision auto "
                         f"(its backends: {list(target.backend_names)})", field="backend")
    return found


def choose(model, *, out: str | os.PathLike, calibration: str | os.PathLike, eval: str | os.PathLike | None = None,
           target: Any = None, backends: list[str] | None = None, device: str | None = None,
           max_drop: float | None = None, protocol=None, workdir: str | os.PathLike | None = None) -> Artifact:
    """Compile every candidate, measure it here, and write the winner to `out`.

    Args:
        model: the ONNX model path.
        out: the artifact folder (written atomically).
        calibration: `.npz` of INT8 calibration inputs.
        eval: `.npz` with `labels` for the accuracy check (default: agreement with fp32 on
            the calibration inputs).
        target: target name, path or Target (default host); its budget sets `max_drop`.
        backends: limit the candidates to these backends (default: the target's).
        device: limit the candidates to presets on this device.
        max_drop: allowed accuracy drop as a fraction (default: the target's, else 0.01).
        protocol: the bench protocol for each candidate (default: one quick repeat).
        workdir: a new folder for the candidates' artifacts and logs, removed afterwards (default: a
            temporary folder).

    Raises:
        InputError, CalibrationError: no usable backend, no calibration data.
        UnsupportedModel: no candidate compiled and ran.
    """
    from ..targets import fit as target_fit, get_target

    if calibration is None:
        raise CalibrationError("--precision auto measures INT8 recipes and needs calibration data: pass "
                               "--calibration FILE.npz")
    target = get_target(target)
    fitted = target_fit(target)
    if max_drop is None:
        max_drop = target.budgets.max_accuracy_drop if target.budgets.max_accuracy_drop is not None \
            else DEFAULT_MAX_DROP
    protocol = protocol or BenchProtocol(repeats=1, min_calls=50, min_time_s=0.5, batch=1)
    entry = model_entry(model)
    config = BenchConfig(models=[model], out=os.devnull, calibration=calibration, protocol=protocol)
    data = eval or calibration
    context = RunContext(config, target, fitted, {"kind": "npz", "path": str(Path(data).resolve())},
                         timeouts=stage_timeouts(protocol),
                         # recipe choice compares candidates on this machine as it is
                         limits=Limits(), started=_dt.datetime.now(_dt.UTC),
                         **({"workdir": Path(workdir)} if workdir is not None else {}))
    context.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    planned = candidates(target, backends, device)
    progress = Steps(len(planned), "precision auto", unit="candidate")
    try:
        for candidate in planned:
            label = candidate["backend"] + (f":{candidate['device']}" if candidate["device"] else "")
            cell = Cell(f"{entry['name']}[{label}/{candidate['precision']}:{candidate['recipe']}@{target.name}]",
                        entry, candidate["backend"], candidate["precision"], options=candidate["options"])
            cell.compile_options, cell.load_options = \
                backend_entries()[candidate["backend"]].backend.split_options(candidate["options"])
            record = run_cell(cell, context)
            rows.append({**candidate, "cell": cell.name, "status": record["status"],
                         "message": record.get("message"),
                         "p50_ms": record["stats"]["p50"] * 1e3 if record["status"] == "ok" else None,
                         "p90_ms": record["stats"]["p90"] * 1e3 if record["status"] == "ok" else None,
                         "accuracy": record.get("accuracy"), "primary_metric": record.get("primary_metric"),
                         "agreement": record.get("agreement"),
                         "size_bytes": record.get("size_bytes"),
                         "artifact": str(context.workdir / cell_folder_name(cell.name))})
            row = rows[-1]
            progress.done(f"{cell.name}: {row['status']}" + (f", p50 {row['p50_ms']:.3g} ms" if row["p50_ms"] else ""))
        winner = _select(rows, max_drop)
        table = {"max_drop": max_drop, "accuracy_from": "labels in " + str(data) if _has_labels(data) else
                 f"top-1 agreement with fp32 on {data}", "emulated": fitted.mode == "emulated",
                 "target": target.name, "chosen": winner["cell"], "notes": _notes(rows),
                 "candidates": [{k: v for k, v in r.items() if k != "artifact"} for r in rows]}

        def build(staging: Path) -> Artifact:
            staging.rmdir()
            shutil.copytree(winner["artifact"], staging)
            manifest = json.loads((staging / "manifest.json").read_text(encoding="utf-8"))
            manifest["selection"] = table
            atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2) + "\n")
            return open_artifact(staging)

        return build_atomically(out, build)
    finally:
        progress.close()
        shutil.rmtree(context.workdir, ignore_errors=True)


def _has_labels(path) -> bool:
    from ..data import NpzArrays

    return NpzArrays(path).labels is not None


def _quality(row: dict[str, Any]) -> float | None:
    """The primary metric, or top-1 agreement with fp32 where there are no labels."""
    metric = primary_metric(row)
    if metric is not None:
        return float(row["accuracy"][metric])
    top1 = (row.get("agreement") or {}).get("top1")
    return None if top1 is None else float(top1)


def _select(rows: list[dict[str, Any]], max_drop: float) -> dict[str, Any]:
    fp32 = {r["backend"]: _quality(r) for r in rows if r["precision"] == "fp32" and r["status"] == "ok"}
    best_fp32 = max((q for q in fp32.values() if q is not None), default=None)
    for row in rows:
        quality = _quality(row)
        reference = fp32.get(row["backend"], best_fp32)
        row["quality"] = quality
        if row["status"] != "ok":
            row["meets_budget"] = False
        elif row["precision"] == "fp32":
            row["meets_budget"] = True
        elif quality is None or reference is None:
            row["meets_budget"] = False
            row["message"] = "no accuracy measured, so it cannot be shown to meet the budget"
        else:
            row["drop"] = reference - quality
            row["meets_budget"] = row["drop"] <= max_drop
    passing = [r for r in rows if r["meets_budget"]]
    if not passing:
        failures = "; ".join(f"{r['cell']}: {r['status']} {r.get('message') or ''}" for r in rows)
        raise UnsupportedModel(f"no candidate compiled and ran: {failures}")
    return min(passing, key=lambda r: r["p50_ms"])


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        fp32 = next((r for r in rows if r["backend"] == backend and r["precision"] == "fp32"
                     and r["status"] == "ok"), None)
        int8 = [r for r in rows if r["backend"] == backend and r["precision"] == "int8" and r["status"] == "ok"]
        if fp32 and int8:
            fastest = min(int8, key=lambda r: r["p50_ms"])
            ratio = fastest["p50_ms"] / fp32["p50_ms"]
            notes.append(f"{backend}: fastest INT8 ({fastest['recipe']}) runs at {ratio:.2f}× fp32's p50"
                         + (" — INT8 is slower than fp32 here, so fp32 is the better choice on this "
                            "backend" if ratio >= 1 else ""))
    return notes
