"""`edgeagent compress` end to end on a tiny teacher over ha-intents: the folder it writes is a student."""

from __future__ import annotations

import json

import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")
pytest.importorskip("hassil")

from edgeagent.cli.main import main  # noqa: E402
from edgeagent.distill import load_joint, save_joint  # noqa: E402
from edgeagent.distill.structure import bert_layers, num_heads  # noqa: E402
from edgeagent.distill.workflow import saved_labels  # noqa: E402
from edgeagent.workloads import ha_intents  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from tests.distill.test_distill import tiny_teacher

    workload = ha_intents.HAIntents(split="dev")
    model = tiny_teacher(workload.training_examples("train")[:500], workload.tokenizer).eval()
    return save_joint(model, tmp_path_factory.mktemp("cli") / "teacher", labels=saved_labels(workload.task),
                      tokenizer=workload.tokenizer_path, extra={"kind": "teacher"})


def test_compress_writes_a_folder_that_loads_exports_and_compiles(teacher_dir, tmp_path, capsys):
    out = tmp_path / "small"
    code = main(["compress", str(teacher_dir), "--prune", "heads=0.5,ffn=0.5", "--low-rank", "embeddings=32",
                 "--workload", "ha-intents", "--recover-epochs", "1", "--limit", "300", "--goal", "size",
                 "--out", str(out), "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] and report["measured"]["size_ratio"] > 1 and 0 <= report["test"]["intent_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "compressed" and config["compression"]["recipe"]["prune"]["heads"] == 0.5
    model = load_joint(out)
    assert [num_heads(layer) for layer in bert_layers(model)] == [2, 2]
    onnx_file = out / "small.onnx"
    assert "compression" in {p.key for p in onnx.load(str(onnx_file)).metadata_props}
    assert main(["compile", str(onnx_file), "--backend", "onnxruntime", "--precision", "int8",
                 "--option", "int8=dynamic", "--out", str(tmp_path / "int8")]) == 0


def test_bad_recipes_exit_1_with_the_parameter_named(teacher_dir, tmp_path, capsys):
    base = ["compress", str(teacher_dir), "--workload", "ha-intents", "--out", str(tmp_path / "x"), "--no-measure"]
    assert main(base + ["--prune", "heads=1.0"]) == 1
    assert "heads=1 is outside [0, 1)" in capsys.readouterr().err
    assert main(base + ["--low-rank", "embeddings=5000"]) == 1
    assert "at most min(m, n)" in capsys.readouterr().err
    assert main(base + ["--low-rank", "pooler=8"]) == 1
    assert "neither a kind" in capsys.readouterr().err



def test_a_causal_lm_folder_is_pruned_recovered_and_exports_as_a_decoder(tmp_path, capsys):
    """A Llama folder: Taylor importance on the workload's chats, one recovery epoch, a Hugging
    Face folder out that `export --task text-generation` takes, with the recipe in config.json."""
    from edgeagent.causal import export_causal_lm
    from tests.decoders import tiny_llama

    folder = tiny_llama(tmp_path / "llama", layers=3, max_positions=512)
    out = tmp_path / "pruned"
    code = main(["compress", str(folder), "--prune", "ffn=0.5,layers=1+", "--workload", "ha-intents",
                 "--limit", "16", "--recover-epochs", "1", "--batch-size", "8", "--no-measure", "--out", str(out),
                 "--format", "json"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out)["compression"]
    assert record["recipe"]["prune"]["importance"] == "taylor" and record["recovery"]
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["intermediate_size"] == 64
    assert config["edgeagent_compression"]["recipe"]["prune"]["ffn"] == 0.5
    ir = export_causal_lm(out, tmp_path / "ir")
    assert ir.metadata["num_layers"] == 2
    # The speed gate and low-rank factors are the encoders'; a decoder is told so.
    assert main(["compress", str(folder), "--prune", "ffn=0.5", "--workload", "ha-intents",
                 "--out", str(tmp_path / "x")]) == 1
    assert "--no-measure" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
