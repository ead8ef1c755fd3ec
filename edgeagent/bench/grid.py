"""The grid: models × backend presets × precisions expanded into cells, each checked up front.

A cell that cannot run here (a backend or device missing, a target that does not deploy with
that backend) is planned as skipped with the reason; a bad argument (an unknown backend,
precision, workload or option, a missing model) fails the whole run before any cell starts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import open_artifact
from ..backend import Precision, backend_entries
from ..errors import BackendUnavailable, InputError
from ..ir import load
from .config import BenchConfig

AUTO = "auto"  # a precision chosen per cell by measuring the backend's recipes (bench.auto)


@dataclass
class Cell:
    """One model × backend (on a device) × precision.

    `options` is what the cell was asked for (the target preset's and `--option`s), recorded in
    the results; `compile_options` and `load_options` are the same split by the backend.
    """

    name: str
    model: dict[str, Any]
    backend: str
    precision: str
    skip: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    compile_options: dict[str, Any] = field(default_factory=dict)
    load_options: dict[str, Any] = field(default_factory=dict)


def cell_folder_name(name: str) -> str:
    """A file-system-safe name for a cell's artifact folder and log in the run's workdir."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def model_entry(path: str | os.PathLike) -> dict[str, Any]:
    """Describe one model argument: an ONNX file or an artifact folder, checked up front."""
    path = Path(path)
    if path.is_dir() and not (path / "manifest.json").exists() and (path / "ir.json").is_file():
        from ..causal.export import TASK, is_decoder

        ir = load(path)  # a decoder IR folder (`export --task text-generation`): compiled per cell
        if is_decoder(ir):
            return {"kind": "onnx", "name": path.name, "path": str(path.resolve()), "sha256": ir.sha256,
                    "task": TASK, "inputs": [s.to_json() for s in ir.inputs]}
    if path.is_dir():
        artifact = open_artifact(path)
        manifest = (path / "manifest.json").read_bytes()
        return {"kind": "artifact", "name": path.name, "path": str(path.resolve()),
                "sha256": artifact.manifest.get("source", {}).get("sha256"),
                "artifact_sha256": hashlib.sha256(manifest).hexdigest(),
                "backend": artifact.backend, "precision": artifact.precision,
                "size_bytes": artifact.size_bytes,
                **({"task": "text-generation"} if artifact.capabilities.get("decoder") else {})}
    if not path.exists():
        raise InputError(f"{path} does not exist: give an .onnx model or an artifact folder", field=str(path))
    ir = load(path)
    return {"kind": "onnx", "name": path.stem, "path": str(path.resolve()), "sha256": ir.sha256,
            "inputs": [s.to_json() for s in ir.inputs]}


def workload_spec(config: BenchConfig) -> dict[str, Any] | None:
    if config.workload and config.eval:
        raise InputError("give --workload or --eval, not both", field="workload")
    if config.eval:
        if not Path(config.eval).is_file():
            raise InputError(f"--eval {config.eval} does not exist", field="eval")
        return {"kind": "npz", "path": str(Path(config.eval).resolve())}
    if config.workload:
        from ..workloads import get_workload

        get_workload(config.workload)  # unknown names fail now, listing the valid ones
        return {"kind": "registered", "name": config.workload}
    return None


def presets(config: BenchConfig, target) -> list:
    """The (backend, device) presets to bench: the target's, in its preference order.

    A target may list one backend on several devices (OpenVINO on NPU, GPU, CPU): each is a
    cell of its own. `--backends` keeps those backends' presets, or a bare one if the target has none.
    """
    from ..targets import BackendPreset

    entries = backend_entries()
    if not config.backends:
        return list(target.backends) or [BackendPreset("onnxruntime")]
    names = list(dict.fromkeys(str(b) for b in config.backends))
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise InputError(f"unknown backend(s) {unknown}; registered backends: {sorted(entries)}",
                         field="backends")
    chosen = []
    for name in names:
        matching = [p for p in target.backends if p.name == name]
        chosen += matching or [BackendPreset(name)]
    return chosen


def plan_cells(config: BenchConfig, target, fit) -> list[Cell]:
    """Expand models × backends × precisions into cells, each skipped with a reason if it cannot run."""
    if config.precisions:
        for p in config.precisions:
            if p != AUTO:
                Precision.parse(p)  # an unknown precision is an error listing the valid ones
    cells: list[Cell] = []
    for raw in config.models:
        model = model_entry(raw)
        if model["kind"] == "artifact":
            from ..targets import BackendPreset

            pairs = [(BackendPreset(model["backend"]), model["precision"])]
        else:
            pairs = [(preset, p if p == AUTO else str(Precision.parse(p)))
                     for preset in presets(config, target)
                     for p in (config.precisions or preset.precisions)]
        for preset, precision in pairs:
            device = config.device or preset.device
            label = preset.name + (f":{device}" if device else "")
            name = f"{model['name']}[{label}/{precision}@{target.name}]"
            options = {**dict(preset.options), **({"device": preset.device} if preset.device else {}),
                       **dict(config.options.get(preset.name, {}))}
            cell = Cell(name, model, preset.name, precision, options=options)
            cell.skip = skip_reason(cell, target, fit, None if config.device else preset.device)
            if cell.skip is None and config.device:
                try:
                    options.update(backend_entries()[preset.name].backend.device_options(config.device))
                except BackendUnavailable as exc:
                    cell.skip = f"--device {config.device}: {exc}"
            if cell.skip is None:  # a misspelt option fails the run now, not each cell later
                backend = backend_entries()[preset.name].backend
                compile_values, load_values = backend.split_options(options)
                backend.compile_options(compile_values)
                backend.load_options(load_values)
                cell.compile_options, cell.load_options = compile_values, load_values
            cells.append(cell)
    names = [c.name for c in cells]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two models share a name, so cells would collide: {duplicates}; rename one",
                         field="models")
    return cells


def skip_reason(cell: Cell, target, fit, device: str | None = None) -> str | None:
    if fit.mode == "skipped":
        return fit.reason
    if target.backends and target.name != "host" and cell.backend not in target.backend_names:
        return (f"target {target.name} does not deploy with {cell.backend} (its backends: "
                f"{list(target.backend_names)}); no other backend is substituted")
    entry = backend_entries()[cell.backend]
    if entry.backend is None:
        return f"backend {cell.backend} failed to load: {entry.error}"
    status = entry.backend.available()
    if not status:
        return f"backend {cell.backend} is unavailable here: {status.reason}"
    if cell.precision == "int4" and not cell.model.get("task"):
        return "int4 is weight-only quantization for generative decoders; this model is not one"
    capabilities = entry.backend.capabilities()
    if cell.precision != AUTO and Precision.parse(cell.precision) not in capabilities.precisions:
        return f"backend {cell.backend} does not offer {cell.precision} here"
    if device and capabilities.devices and not any(d == device or d.startswith(device + ".")
                                                   for d in capabilities.devices):
        return (f"{cell.backend} device {device} is not present here (present: {list(capabilities.devices)}); "
                "no other device is substituted")
    return None
