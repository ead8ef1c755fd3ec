"""INT8 with an accuracy check: compare a backend's INT8 with fp32 on a workload and keep the
nodes whose quantization hurts most in fp32 where the drop is over budget.

`choose` and `candidates` (`--precision auto`) live in `edgeagent.bench.auto`, since they measure
candidates as bench cells; they are re-exported here for the API.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .artifact import Artifact, atomic_write_text, build_atomically, open_artifact
from .bench.auto import DEFAULT_MAX_DROP, candidates, choose
from .errors import UnsupportedModel
from .log import log

__all__ = ["DEFAULT_MAX_DROP", "candidates", "choose", "evaluate_artifact", "int8_with_fallback", "node_sensitivity"]

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

    from .progress import Steps

    nodes = [n.name for n in ir.proto(load_weights=False).graph.node if n.op_type in QUANTIZABLE_OPS and n.name]
    results = []
    progress = Steps(len(nodes), "INT8 sensitivity", unit="node")
    for index, node in enumerate(nodes):
        progress.done(node)
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
    progress.close()
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
        if drop > max_drop and not int8.capabilities.get("int8_node_exclusion"):
            raise UnsupportedModel(f"INT8 loses {drop * 100:.2f} points of {metric} (budget "
                                   f"{max_drop * 100:.2f}) and backend {backend!r} cannot keep nodes in fp32: "
                                   "use fp32, another INT8 recipe, or the onnxruntime backend")
        if drop > max_drop:
            errors = node_sensitivity(ir, backend, options, calibration, workload, reference, work)
            kept: list[str] = []
            attempt = None
            for count in _doubling(len(errors)):
                log.info("INT8 fallback: %d most sensitive node(s) kept in fp32", count)
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
