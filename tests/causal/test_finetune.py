"""Fine-tuning a decoder into a tool caller and distilling it (edgeagent.causal.finetune), on a
tiny random Llama with the ha-intents chat: real peft, real torch, real data."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from edgeagent.causal import distill_causal_lm, finetune_causal_lm
from edgeagent.causal.finetune import TRAINING_FILE, student_from_teacher, student_layers
from edgeagent.errors import InputError
from tests.test_cli import run_cli

pytest.importorskip("peft")

FAST = {"max_examples": 8, "epochs": 1, "batch_size": 4, "progress": False}


@pytest.fixture(scope="module")
def long_llama(tmp_path_factory):
    """A three-layer tiny Llama with room for the ha-intents chat (system prompt, utterance, call)."""
    from tests.decoders import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("long") / "llama", layers=3, max_positions=512)


def _weights_digest(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _record(folder) -> dict:
    return json.loads((folder / TRAINING_FILE).read_text())


def test_lora_finetune_learns_the_calls_and_records_its_recipe(long_llama, tmp_path):
    from safetensors import safe_open

    out = finetune_causal_lm(long_llama, tmp_path / "teacher", max_examples=32, epochs=3, learning_rate=3e-3,
                             batch_size=8, progress=False)
    record = _record(out)
    assert record["recipe"]["lora"] is True and record["trainable_parameters"] > 0
    assert record["data"]["train_examples"] == 32 and record["data"]["skipped_too_long"] == 0
    # Teacher-forced on dev utterances it never saw: the call's tokens got more likely.
    assert record["dev_after"]["dev_loss"] < record["dev_before"]["dev_loss"] - 0.5
    assert record["dev_after"]["dev_call_token_accuracy"] > record["dev_before"]["dev_call_token_accuracy"]
    assert record["epoch_losses"][-1] < record["epoch_losses"][0]
    assert set(record["bf16"]) >= {"used", "why", "avx512_bf16", "amx_bf16"}
    # The adapters are merged: a plain folder, other weights than the source's, no peft names.
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]
    assert _weights_digest(out) != _weights_digest(long_llama)
    from edgeagent.causal.sources import load_causal_lm

    assert load_causal_lm(out).model.config.num_hidden_layers == 3


def test_same_seed_same_weights_another_seed_others(long_llama, tmp_path):
    a = finetune_causal_lm(long_llama, tmp_path / "a", lora=False, seed=3, **FAST)
    b = finetune_causal_lm(long_llama, tmp_path / "b", lora=False, seed=3, **FAST)
    c = finetune_causal_lm(long_llama, tmp_path / "c", lora=False, seed=4, **FAST)
    assert _weights_digest(a) == _weights_digest(b) != _weights_digest(c)
    assert _record(a)["recipe"]["lora"] is False


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(long_llama, tmp_path, monkeypatch):
    import torch

    recipe = {**FAST, "max_examples": 12, "epochs": 2, "checkpoint_every": 1, "seed": 1}
    whole = finetune_causal_lm(long_llama, tmp_path / "whole", **recipe)
    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def failing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:  # the fifth of six steps: a kill in the second epoch
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        finetune_causal_lm(long_llama, tmp_path / "resumed", checkpoint_dir=checkpoints, **recipe)
    assert not (tmp_path / "resumed").exists() or not any((tmp_path / "resumed").iterdir())
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    resumed = finetune_causal_lm(long_llama, tmp_path / "resumed", checkpoint_dir=checkpoints, resume=True, **recipe)
    assert _weights_digest(resumed) == _weights_digest(whole)
    assert _record(resumed)["epoch_losses"] == pytest.approx(_record(whole)["epoch_losses"])

    # A checkpoint is data from disk: another recipe's, or a pickle, is refused with the fix.
    with pytest.raises(InputError, match="another recipe"):
        finetune_causal_lm(long_llama, tmp_path / "other", checkpoint_dir=checkpoints, resume=True,
                           **{**recipe, "seed": 2})
    (checkpoints / "trainer_state.pt").write_bytes(pickle.dumps({"optimizer": 1}))
    with pytest.raises(InputError, match="cannot be read safely|lacks"):
        finetune_causal_lm(long_llama, tmp_path / "other", checkpoint_dir=checkpoints, resume=True, **recipe)


def test_student_layers_are_evenly_spaced_and_copied(long_llama):
    import torch

    from edgeagent.causal.sources import load_causal_lm

    assert student_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert student_layers(3, 2) == [0, 2] and student_layers(4, 1) == [3]
    teacher = load_causal_lm(long_llama).model
    student = student_from_teacher(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.1.self_attn.q_proj.weight"], t["model.layers.2.self_attn.q_proj.weight"])
    assert torch.equal(s["model.layers.0.mlp.down_proj.weight"], t["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # still tied


def test_distilled_student_learns_from_soft_targets_and_is_reproducible(long_llama, tmp_path):
    teacher = finetune_causal_lm(long_llama, tmp_path / "teacher", max_examples=32, epochs=2, learning_rate=3e-3,
                                 batch_size=8, progress=False)
    recipe = {"num_layers": 2, "max_examples": 32, "epochs": 2, "learning_rate": 3e-3, "hidden_weight": 1.0,
              "progress": False}
    a = distill_causal_lm(teacher, tmp_path / "a", **recipe)
    b = distill_causal_lm(teacher, tmp_path / "b", **recipe)
    record = _record(a)
    assert record["recipe"]["layers"] == [0, 2] and record["teacher_layers"] == 3
    assert record["parameters"] < record["teacher_parameters"]
    assert record["dev_after"]["dev_loss"] < record["dev_before"]["dev_loss"]
    assert _weights_digest(a) == _weights_digest(b)  # same seed, same student


@pytest.mark.parametrize("call, options, message", [
    ("finetune", {"epochs": 0}, "epochs must be a positive integer"),
    ("finetune", {"learning_rate": 5.0}, "learning_rate must be in"),
    ("finetune", {"lora_rank": 0}, "lora_rank"),
    ("finetune", {"bf16": "maybe"}, "bf16 must be"),
    ("finetune", {"workload": "speech"}, "no generative task"),
    ("finetune", {"max_length": 16}, "longer than max_length=16"),
    ("distill", {"num_layers": 3}, "num_layers must be from 1 to 2"),
    ("distill", {"layers": [2, 0]}, "layers must be distinct, increasing"),
    ("distill", {"layers": [0, 5]}, "layers must be distinct, increasing"),
    ("distill", {"alpha": 1.5}, "alpha must be in"),
    ("distill", {"temperature": 0}, "temperature must be positive"),
])
def test_bad_recipes_are_typed_errors_before_training(long_llama, tmp_path, call, options, message):
    train = finetune_causal_lm if call == "finetune" else distill_causal_lm
    with pytest.raises(InputError, match=message):
        train(long_llama, tmp_path / "out", **{**FAST, **options})
    assert not (tmp_path / "out").exists()


def test_out_must_be_new_or_empty(long_llama, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        finetune_causal_lm(long_llama, tmp_path / "out", **FAST)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_finetune_and_distill_text_generation(long_llama, tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    code, out, err = run_cli("finetune", "--workload", "ha-intents", "--task", "text-generation", "--model",
                             str(long_llama), "--limit", "8", "--batch-size", "4", "--out", str(teacher),
                             capsys=capsys)
    assert code == 0, err
    assert "generative teacher" in out and "--task text-generation" in out
    assert _record(teacher)["recipe"]["epochs"] == 1 and _record(teacher)["recipe"]["learning_rate"] == 2e-4
    code, out, err = run_cli("distill", "--workload", "ha-intents", "--task", "text-generation", "--teacher",
                             str(teacher), "--student", "layers=1", "--teacher-layers", "1", "--hidden-loss", "mse",
                             "--limit", "8", "--batch-size", "4", "--out", str(student), capsys=capsys)
    assert code == 0, err
    record = _record(student)
    assert record["recipe"]["layers"] == [1] and record["recipe"]["hidden_weight"] == 1.0
    code, out, err = run_cli("distill", "--workload", "ha-intents", "--task", "text-generation", "--teacher",
                             str(teacher), "--student", "layers=2,hidden=32", "--out", str(tmp_path / "x"),
                             capsys=capsys)
    assert code == 1 and "takes layers=N only" in err
