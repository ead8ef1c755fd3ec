"""The gate: kept only if the compressed export measures faster (or smaller) beyond the noise."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")
pytest.importorskip("scipy")

import edgeagent  # noqa: E402
from edgeagent.compress import MeasureSpec  # noqa: E402
from edgeagent.compress.measure import measure_files  # noqa: E402
from edgeagent.distill.workflow import export_model  # noqa: E402
from edgeagent.errors import CompressionRejected, InputError  # noqa: E402

from . import tiny  # noqa: E402

pytestmark = pytest.mark.torch
QUICK = dict(rounds=5, min_seconds=0.05)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    big = tiny.joint("compact", layers=4, hidden=256, heads=4, ffn=1024)
    small = edgeagent.compress(big, prune={"layers": 0.75, "ffn": 0.75, "importance": "magnitude"})
    task = tiny.task()
    return export_model(task, big, folder / "big.onnx"), export_model(task, small, folder / "small.onnx"), folder


def test_a_much_smaller_model_measures_faster_and_a_slower_one_does_not(exports):
    big, small, folder = exports
    data = tiny.examples(16)
    faster = measure_files(big, small, spec=MeasureSpec(**QUICK), workdir=folder / "a", examples=data)
    assert faster["kept"] and faster["speedup"] > 1.5 and faster["interval_pct"][1] < 0
    assert faster["mode"] == "model" and faster["size_bytes"]["compressed"] < faster["size_bytes"]["input"]
    slower = measure_files(small, big, spec=MeasureSpec(**QUICK), workdir=folder / "b", examples=data)
    assert not slower["kept"] and slower["interval_pct"][0] > 0


def test_size_goal_compares_artifact_bytes(exports):
    big, small, folder = exports
    same = measure_files(big, big, spec=MeasureSpec(goal="size"), workdir=folder / "c")
    assert not same["kept"] and same["size_ratio"] == 1.0
    assert measure_files(big, small, spec=MeasureSpec(goal="size"), workdir=folder / "d")["kept"]


def test_compress_keeps_the_input_or_raises_when_the_recipe_does_not_measure_better(tmp_path, monkeypatch):
    model = tiny.joint("compact")
    recipe = dict(prune={"ffn": 0.25, "importance": "magnitude"}, task=tiny.task(), workdir=tmp_path)
    demanding = {"goal": "size", "min_change_pct": 90}
    kept = edgeagent.compress(model, measure={**demanding, "on_reject": "keep-input"}, **recipe)
    assert kept is model and kept.compression_rejected["kept"] is False
    assert kept.compression_rejected["size_ratio"] > 1 and "not smaller" in kept.compression_rejected["verdict"]
    # The same measurement with on_reject="error" (the default) raises; the exports are not redone here.
    import edgeagent.compress.measure as gate
    from edgeagent.distill import workflow

    monkeypatch.setattr(workflow, "export_model", lambda task, m, path: path)
    monkeypatch.setattr(gate, "measure_files", lambda *a, **k: dict(kept.compression_rejected))
    with pytest.raises(CompressionRejected, match="not smaller") as caught:
        edgeagent.compress(model, measure=demanding, **recipe)
    assert caught.value.measurement["size_ratio"] > 1
    # (A recipe that is kept: the CLI test's.)


def test_measure_spec_refusals():
    with pytest.raises(InputError, match="goal"):
        MeasureSpec(goal="latency")
    with pytest.raises(InputError, match="rounds"):
        MeasureSpec(rounds=1)
    with pytest.raises(InputError, match="needs the model's task"):
        edgeagent.compress(tiny.joint("compact"), prune={"ffn": 0.5, "importance": "magnitude"}, measure="size")
