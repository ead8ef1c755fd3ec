"""The bench's cells as a pytest-benchmark suite, for users already on pytest-benchmark.

    pytest benchmarks/ --benchmark-json=FILE [--edgeagent-model M.onnx --edgeagent-eval E.npz]

One benchmark per backend × precision, timing `Session.run` on batch-1 eval inputs like
`edgeagent bench` does; each carries accuracy and agreement with onnxruntime fp32 in
`extra_info`. In-process, so without the isolation `edgeagent bench` gives: use that for grids.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import edgeagent
from edgeagent.workloads import NpzClassification
from tests import models

PRECISIONS = ("fp32", "fp16", "int8")


@pytest.fixture(scope="module")
def cell_inputs(request, tmp_path_factory):
    model = request.config.getoption("--edgeagent-model")
    data = request.config.getoption("--edgeagent-eval")
    if model is None:
        folder = tmp_path_factory.mktemp("cells")
        model = models.mlp_classifier(folder / "mlp.onnx")
        data = models.blobs_eval_npz(folder / "eval.npz")
    return edgeagent.load(model), data


def _backends(config) -> list[str]:
    chosen = config.getoption("--edgeagent-backends")
    names = chosen.split(",") if chosen else [row["name"] for row in edgeagent.list_backends()]
    return [n for n in names if edgeagent.get_backend(n).available()]


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells = list(itertools.product(_backends(metafunc.config), PRECISIONS))
        metafunc.parametrize("cell", cells, ids=[f"{b}-{p}" for b, p in cells])


def _outputs(session, workload, inputs):
    parts, labels = [], []
    for feeds, batch_labels in workload.eval_batches(inputs):
        parts.append(next(iter(session.run(feeds).values())))
        labels.append(batch_labels)
    return np.concatenate(parts), (None if labels[0] is None else np.concatenate(labels))


def test_cell(benchmark, cell, cell_inputs, tmp_path):
    backend, precision = cell
    ir, data = cell_inputs
    if precision not in [str(p) for p in edgeagent.get_backend(backend).capabilities().precisions]:
        pytest.skip(f"{backend} does not offer {precision} here")
    workload = NpzClassification(data)
    calibration = workload.calibration(ir.inputs) if precision == "int8" else None
    artifact = edgeagent.compile(ir, backend, precision, calibration=calibration, out=tmp_path / "artifact")
    reference_artifact = edgeagent.compile(ir, "onnxruntime", "fp32", out=tmp_path / "reference")
    with edgeagent.load_session(artifact) as session, edgeagent.load_session(reference_artifact) as reference:
        feeds = workload.timing_feeds(session.inputs, 64)
        calls = itertools.cycle(feeds)
        benchmark(lambda: session.run(next(calls)))
        outputs, labels = _outputs(session, workload, session.inputs)
        expected, _ = _outputs(reference, workload, reference.inputs)
    benchmark.extra_info.update({
        "backend": backend, "precision": precision, "size_bytes": artifact.size_bytes,
        **{f"accuracy.{k}": v for k, v in workload.metrics({"out": outputs}, labels).items()},
        "agreement.top1": float(np.mean(outputs.argmax(-1) == expected.argmax(-1))),
        "agreement.max_abs_diff": float(np.max(np.abs(outputs.astype(np.float64) - expected))),
    })
    assert np.all(np.isfinite(outputs))
