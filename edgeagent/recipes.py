"""`--precision auto`: measure the INT8 recipes a target's backends offer and keep the best.

Every candidate (fp32 and each backend's INT8 variants) is compiled and timed as a bench cell
in its own processes, on this machine. The fastest candidate whose accuracy stays within the
target's budget wins; the full table goes into the artifact's manifest as `selection`. INT8 is
never assumed to be faster: on CPUs without VNNI some recipes are slower than fp32, and then
fp32 wins and the table says why.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .artifact import Artifact, atomic_write_text, build_atomically, open_artifact
from .backend import Precision, backend_entries
from .errors import CalibrationError, InputError, UnsupportedModel

DEFAULT_MAX_DROP = 0.01


def candidates(target, backends: list[str] | None = None, device: str | None = None) -> list[dict[str, Any]]:
    """fp32 and INT8 variants for each of the target's backend presets usable here."""
    from .targets import BackendPreset

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
           max_drop: float | None = None, protocol=None) -> Artifact:
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

    Raises:
        InputError, CalibrationError: no usable backend, no calibration data.
        UnsupportedModel: no candidate compiled and ran.
    """
    from .bench.runner import (BenchConfig, BenchProtocol, Cell, Limits, RunContext, _model_entry,
                               cell_folder_name, run_cell, stage_timeouts)
    from .targets import fit as target_fit, get_target

    if calibration is None:
        raise CalibrationError("--precision auto measures INT8 recipes and needs calibration data: pass "
                               "--calibration FILE.npz")
    target = get_target(target)
    fitted = target_fit(target)
    if max_drop is None:
        max_drop = target.budgets.max_accuracy_drop if target.budgets.max_accuracy_drop is not None \
            else DEFAULT_MAX_DROP
    protocol = protocol or BenchProtocol(repeats=1, min_calls=50, min_time_s=0.5, batch=1)
    entry = _model_entry(model)
    config = BenchConfig(models=[model], out=os.devnull, calibration=calibration, protocol=protocol)
    data = eval or calibration
    context = RunContext(config, target, fitted, {"kind": "npz", "path": str(Path(data).resolve())},
                         timeouts=stage_timeouts(protocol),
                         # recipe choice compares candidates on this machine as it is
                         limits=Limits(), started=_dt.datetime.now(_dt.UTC))
    rows = []
    try:
        for candidate in candidates(target, backends, device):
            label = candidate["backend"] + (f":{candidate['device']}" if candidate["device"] else "")
            cell = Cell(f"{entry['name']}[{label}/{candidate['precision']}:{candidate['recipe']}@{target.name}]",
                        entry, candidate["backend"], candidate["precision"], options=candidate["options"])
            record = run_cell(cell, context)
            rows.append({**candidate, "cell": cell.name, "status": record["status"],
                         "message": record.get("message"),
                         "p50_ms": record["stats"]["p50"] * 1e3 if record["status"] == "ok" else None,
                         "p90_ms": record["stats"]["p90"] * 1e3 if record["status"] == "ok" else None,
                         "accuracy": record.get("accuracy"), "agreement": record.get("agreement"),
                         "size_bytes": record.get("size_bytes"),
                         "artifact": str(context.workdir / cell_folder_name(cell.name))})
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
        shutil.rmtree(context.workdir, ignore_errors=True)


def _has_labels(path) -> bool:
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        return "labels" in npz.files


def _quality(row: dict[str, Any]) -> float | None:
    """The primary metric, or top-1 agreement with fp32 where there are no labels."""
    if row.get("accuracy"):
        return float(next(iter(row["accuracy"].values())))
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


# --------------------------------------------------------------------------------------------
# INT8 with an accuracy check and a fallback

QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "Gather", "Attention", "MatMulInteger")


def evaluate_artifact(artifact, workload) -> tuple[dict[str, float], dict[str, Any]]:
    """The workload's metrics for an artifact, and its concatenated outputs."""
    import numpy as np

    from .pipeline import load_session

    with load_session(artifact) as session:
        parts: dict[str, list] = {}
        labels = []
        for feeds, batch_labels in workload.eval_batches(session.inputs):
            for name, value in session.run(feeds).items():
                parts.setdefault(name, []).append(value)
            if batch_labels is not None:
                labels.append(batch_labels)
    outputs = {k: np.concatenate(v) for k, v in parts.items()}
    return workload.metrics(outputs, np.concatenate(labels) if labels else None), outputs


def node_sensitivity(ir, backend: str, options: dict[str, Any], calibration, workload, reference: dict,
                     workdir: Path) -> list[dict[str, Any]]:
    """Quantize one node at a time and measure the outputs' error against fp32, worst first."""
    import numpy as np

    from .pipeline import compile as compile_model

    nodes = [n.name for n in ir.proto(load_weights=False).graph.node if n.op_type in QUANTIZABLE_OPS and n.name]
    results = []
    for index, node in enumerate(nodes):
        try:
            artifact = compile_model(ir, backend, "int8", calibration=calibration,
                                     options={**options, "nodes_to_quantize": (node,)},
                                     out=workdir / f"node-{index}")
        except Exception as exc:  # noqa: BLE001 - a node the quantizer skips is not sensitive
            results.append({"node": node, "error": 0.0, "note": f"not quantized: {exc}"})
            continue
        _, outputs = evaluate_artifact(artifact, workload)
        error = max(float(np.mean(np.abs(outputs[k] - reference[k]))) / (float(np.std(reference[k])) or 1.0)
                    for k in reference)
        results.append({"node": node, "error": error})
        shutil.rmtree(artifact.path, ignore_errors=True)
    return sorted(results, key=lambda r: -r["error"])


def int8_with_fallback(model, *, workload, out: str | os.PathLike, backend: str = "onnxruntime",
                       calibration=None, options: dict[str, Any] | None = None,
                       max_drop: float = DEFAULT_MAX_DROP) -> Artifact:
    """Compile INT8, compare its primary metric with fp32 on the workload, and where the drop is
    over `max_drop`, keep the most sensitive nodes in fp32 until it is not.

    The report (fp32 and INT8 metrics, drop, nodes kept in fp32 and every node's measured error)
    goes into the manifest as `int8_check`.

    Raises:
        UnsupportedModel: even with every quantizable node in fp32 the drop stays over budget.
    """
    import tempfile

    from .ir import load
    from .pipeline import compile as compile_model

    ir = model if hasattr(model, "inputs") else load(model)
    options = dict(options or {})
    metric = workload.primary_metric
    with tempfile.TemporaryDirectory(prefix="edgeagent-int8-check-") as tmp:
        work = Path(tmp)
        fp32 = compile_model(ir, backend, "fp32", out=work / "fp32")
        fp32_metrics, reference = evaluate_artifact(fp32, workload)
        int8 = compile_model(ir, backend, "int8", calibration=calibration, options=options, out=work / "int8")
        int8_metrics, _ = evaluate_artifact(int8, workload)
        drop = fp32_metrics[metric] - int8_metrics[metric]
        report: dict[str, Any] = {"metric": metric, "fp32": fp32_metrics, "int8": int8_metrics, "drop": drop,
                                  "max_drop": max_drop, "fallback": None}
        chosen = int8
        if drop > max_drop:
            errors = node_sensitivity(ir, backend, options, calibration, workload, reference, work)
            kept: list[str] = []
            attempt = None
            for count in _doubling(len(errors)):
                kept = [e["node"] for e in errors[:count]]
                attempt = compile_model(ir, backend, "int8", calibration=calibration,
                                        options={**options, "nodes_to_exclude": tuple(kept)},
                                        out=work / f"fallback-{count}")
                metrics, _ = evaluate_artifact(attempt, workload)
                if fp32_metrics[metric] - metrics[metric] <= max_drop:
                    break
            else:
                raise UnsupportedModel(f"INT8 loses {drop * 100:.2f} points of {metric} and keeping all "
                                       f"{len(errors)} quantizable nodes in fp32 does not bring it within "
                                       f"{max_drop * 100:.2f}: use fp32 for this model")
            report["fallback"] = {"nodes_kept_fp32": kept, "int8": metrics,
                                  "drop": fp32_metrics[metric] - metrics[metric], "node_errors": errors}
            chosen = attempt

        def build(staging: Path) -> Artifact:
            staging.rmdir()
            shutil.copytree(chosen.path, staging)
            manifest = json.loads((staging / "manifest.json").read_text(encoding="utf-8"))
            manifest["int8_check"] = report
            atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
            return open_artifact(staging)

        return build_atomically(out, build)


def _doubling(limit: int):
    count = 1
    while count < limit:
        yield count
        count *= 2
    if limit:
        yield limit
