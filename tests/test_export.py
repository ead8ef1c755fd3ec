"""edgeagent.export: parity-checked export, Hugging Face encoders, safe checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export needs the train extra (torch)")

import edgeagent  # noqa: E402
from edgeagent.errors import ExportMismatch, InputError, ModelRejected  # noqa: E402
from edgeagent.export import load_state_dict  # noqa: E402


def test_export_checks_parity_and_keeps_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model.train()
    ir = edgeagent.export(model, torch.randn(1, 6), tmp_path / "m.onnx", metadata={"labels": ["a", "b", "c"]})
    assert model.training, "the module's mode is restored"
    assert ir.inputs[0].shape == ("batch", 6) and ir.outputs[0].shape == ("batch", 3)
    assert ir.labels == ["a", "b", "c"] and ir.metadata["source"].startswith("torch:")
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    with edgeagent.load_session(edgeagent.compile(ir, out=tmp_path / "a")) as session:
        got = session.run({ir.inputs[0].name: x})[ir.outputs[0].name]
    np.testing.assert_allclose(got, model.eval()(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


class Noisy(torch.nn.Module):
    """Adds fresh random noise: ONNX's RandomUniformLike cannot reproduce torch's draws."""

    def forward(self, x):
        return x + torch.rand_like(x)


def test_mismatch_raises_with_report(tmp_path):
    with pytest.raises(ExportMismatch) as info:
        edgeagent.export(Noisy(), torch.zeros(2, 4), tmp_path / "noisy.onnx")
    report = info.value.report
    assert report and not all(r["ok"] for r in report)
    assert {"output", "inputs", "max_abs_diff", "max_rel_diff"} <= set(report[0])
    assert {r["inputs"] for r in report} == {"example", "random_larger", "random_smaller"}
    assert not (tmp_path / "noisy.onnx").exists(), "nothing is written when parity fails"


def test_hf_bert_classifier_with_dynamic_batch_and_sequence(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, num_labels=3,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    example = {"input_ids": torch.randint(0, 120, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long),
               "token_type_ids": torch.zeros(2, 10, dtype=torch.long)}
    axes = {k: {0: "batch", 1: "sequence"} for k in example} | {"logits": {0: "batch"}}
    ir = edgeagent.export(model, example, tmp_path / "bert.onnx", dynamic_axes=axes)
    assert [s.name for s in ir.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(s.shape == ("batch", "sequence") for s in ir.inputs)
    assert ir.outputs[0].name == "logits" and ir.outputs[0].shape == ("batch", 3)


def test_hf_folder_export(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "turn", "on",
                                         "the", "kitchen", "lights", "what", "is", "temperature",
                                         "in", "living", "room"])}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, num_labels=2,
                                     id2label={0: "off", 1: "on"}, label2id={"off": 0, "on": 1})
    folder = tmp_path / "hf"
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    ir = edgeagent.export_hf(folder, tmp_path / "hf.onnx", task="text-classification", sequence_length=8)
    assert ir.labels == ["off", "on"]
    assert ir.metadata["task"] == "text-classification"
    with pytest.raises(InputError, match="task"):
        edgeagent.export_hf(folder, tmp_path / "x.onnx", task="translation")


def test_checkpoints_load_only_safely(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.ones(2, 2)}
    save_file(state, tmp_path / "ok.safetensors")
    torch.save(state, tmp_path / "ok.pt")
    assert torch.equal(load_state_dict(tmp_path / "ok.safetensors")["w"], state["w"])
    assert torch.equal(load_state_dict(tmp_path / "ok.pt")["w"], state["w"])
    # A pickle carrying an arbitrary object is refused by weights_only=True.
    torch.save({"w": torch.ones(1), "evil": Noisy()}, tmp_path / "evil.pt")
    with pytest.raises(ModelRejected, match="weights_only"):
        load_state_dict(tmp_path / "evil.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelRejected, match="safetensors"):
        load_state_dict(tmp_path / "bad.safetensors")
