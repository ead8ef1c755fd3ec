"""export_causal_lm on tiny Llama (GQA, tied) and Qwen2 (qkv bias) decoders: the contract's
folder, names, dims and metadata; the exported graph checked by ONNX Runtime independently of
the parity code; the GGUF and module:function sources; bad input → typed errors, nothing written."""

from __future__ import annotations

import json
import pickle
import shutil
import struct

import numpy as np
import onnx
import pytest

from edgeagent.causal import DecoderIR, export_causal_lm, open_decoder_ir, parity
from edgeagent.errors import ExportMismatch, InputError, ModelRejected, UnsupportedModel

CONTRACT_FILES = {"model.onnx", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                  "config.json", "ir.json"}
METADATA_KEYS = {"edgeagent.task", "architecture", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "hidden_size", "vocab_size", "eos_token_ids", "bos_token_id", "pad_token_id",
                 "max_length", "tie_word_embeddings", "source", "source_sha256"}


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".building-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("which, arch, tied", [("llama_ir", "llama", True), ("qwen2_ir", "qwen2", False)])
def test_ir_folder_follows_the_contract(request, which, arch, tied):
    ir: DecoderIR = request.getfixturevalue(which)
    assert {p.name for p in ir.path.iterdir()} == CONTRACT_FILES
    layers = ir.num_layers
    assert [s.name for s in ir.model.inputs] == ["input_ids", "attention_mask", "position_ids",
                                                 *parity.kv_names(layers)[0]]
    assert [s.name for s in ir.model.outputs] == ["logits", *parity.kv_names(layers)[1]]
    specs = {s.name: s for s in (*ir.model.inputs, *ir.model.outputs)}
    assert specs["input_ids"].dtype == "int64" and specs["input_ids"].shape == ("batch", "sequence")
    assert specs["attention_mask"].shape == ("batch", "total_sequence")
    assert specs["position_ids"].shape == ("batch", "sequence")
    assert specs["past_key_values.1.value"].shape == ("batch", 2, "past_sequence", 16)
    assert specs["past_key_values.0.key"].dtype == "float32"
    assert specs["present.1.key"].shape == ("batch", 2, "total_sequence", 16)
    assert specs["logits"].shape == ("batch", "sequence", 384)
    # metadata_props and ir.json carry the same keys (strings in ONNX, JSON types in ir.json)
    assert METADATA_KEYS <= set(ir.model.metadata)
    meta = ir.metadata
    assert meta["format"] == "edgeagent.decoder/1" and meta["task"] == "text-generation"
    assert (meta["architecture"], meta["num_layers"], meta["num_heads"], meta["num_kv_heads"],
            meta["head_dim"], meta["hidden_size"], meta["vocab_size"]) == (arch, 2, 4, 2, 16, 64, 384)
    assert meta["eos_token_ids"] == [2] and meta["bos_token_id"] == 1 and meta["pad_token_id"] == 0
    assert meta["max_length"] == 128 and meta["tie_word_embeddings"] is tied
    assert json.loads(ir.model.metadata["eos_token_ids"]) == [2]
    assert ir.model.metadata["architecture"] == arch
    assert meta["parity"]["failed"] == 0 and meta["parity"]["greedy_identical"] == "5/5"
    assert meta["parity"]["decode_steps"] == 16
    # standard ONNX only, opset 18
    proto = onnx.load(str(ir.model.path), load_external_data=False)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert ir.model.opset == 18
    tok_config = json.loads((ir.path / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"] and tok_config["model_max_length"] == 128
    config = json.loads((ir.path / "config.json").read_text())
    assert config["architectures"] == [f"{'Llama' if tied else 'Qwen2'}ForCausalLM"]
    assert json.loads((ir.path / "generation_config.json").read_text())["eos_token_id"] == 2
    assert open_decoder_ir(ir.path).model.sha256 == ir.model.sha256


def test_greedy_through_onnx_runtime_equals_transformers_generate(llama_ir, llama_dir, prompts_ids):
    """The IR against transformers' own generate(), not the parity module's reference loop."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    step = parity.ort_step(llama_ir.model.path, llama_ir.num_layers)
    for prompt in prompts_ids[:2]:
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        ours, _ = parity.greedy(step, prompt, 12, num_layers=2, num_kv_heads=2, head_dim=16)
        assert ours == out[0, len(prompt):].tolist()


def test_left_padding_and_chunked_prefill(qwen2_ir, prompts_ids):
    """A left-padded row gives the logits it gives alone; feeding a prompt in two chunks with
    the cache in between gives the logits of feeding it at once (past length 9, sequence 3)."""
    step = parity.ort_step(qwen2_ir.model.path, qwen2_ir.num_layers)
    layout = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 16}
    short, long = prompts_ids[3][:7], prompts_ids[0][:12]
    ids, mask = parity.left_pad([short, long], pad_id=0)
    batch_logits, batch_cache = step(ids, mask, parity.position_ids(mask), parity.empty_past(2, **layout))
    alone = np.asarray([short])
    alone_logits, alone_cache = step(alone, np.ones_like(alone), parity.position_ids(np.ones_like(alone)),
                                     parity.empty_past(1, **layout))
    np.testing.assert_allclose(batch_logits[0, -len(short):], alone_logits[0], atol=1e-4)
    # one decode step in the padded batch: row 0 still matches its own
    token = np.asarray([[5], [5]])
    mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    pos2 = parity.position_ids(mask2)[:, -1:]
    step_logits, _ = step(token, mask2, pos2, batch_cache)
    single, _ = step(token[:1], np.ones((1, len(short) + 1), np.int64), np.asarray([[len(short)]]), alone_cache)
    np.testing.assert_allclose(step_logits[0], single[0], atol=1e-4)
    # chunked prefill: 9 then 3 tokens
    full = np.asarray([long])
    full_logits, _ = step(full, np.ones_like(full), parity.position_ids(np.ones_like(full)), parity.empty_past(1, **layout))
    _, cache = step(full[:, :9], np.ones((1, 9), np.int64), np.arange(9)[None], parity.empty_past(1, **layout))
    chunk_logits, present = step(full[:, 9:], np.ones((1, 12), np.int64), np.arange(9, 12)[None], cache)
    np.testing.assert_allclose(chunk_logits[0], full_logits[0, 9:], atol=1e-4)
    assert present[0].shape == (1, 2, 12, 16)


def test_batch_of_three_matches_transformers(llama_ir, llama_dir, prompts_ids):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    ids, mask = parity.left_pad(prompts_ids[:3], pad_id=0)
    pos = parity.position_ids(mask)
    layout = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 16}
    got, _ = parity.ort_step(llama_ir.model.path, 2)(ids, mask, pos, parity.empty_past(3, **layout))
    ref, _ = parity.torch_step(model)(ids, mask, pos, parity.empty_past(3, **layout))
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], ref[real], atol=1e-4, rtol=1e-4)


def test_gguf_source_exports_the_same_model(tiny_gguf, llama_ir, decoders_dir, prompts_ids):
    ir = export_causal_lm(tiny_gguf, decoders_dir / "gguf-ir")
    assert ir.metadata["source"].startswith("gguf:") and ir.metadata["architecture"] == "llama"
    assert ir.metadata["tie_word_embeddings"] is True and ir.metadata["num_kv_heads"] == 2
    config = json.loads((ir.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert "chat_template" in json.loads((ir.path / "tokenizer_config.json").read_text())
    # The GGUF holds tiny_llama's weights (q/k permuted the llama.cpp way): same logits.
    ids = np.asarray([prompts_ids[0]])
    layout = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 16}
    feeds = (ids, np.ones_like(ids), parity.position_ids(np.ones_like(ids)), parity.empty_past(1, **layout))
    from_gguf, _ = parity.ort_step(ir.model.path, 2)(*feeds)
    from_folder, _ = parity.ort_step(llama_ir.model.path, 2)(*feeds)
    np.testing.assert_allclose(from_gguf, from_folder, atol=1e-5)


def test_module_function_source_replaces_an_existing_ir(llama_ir, tmp_path, capsys):
    """Through the CLI (`edgeagent export SOURCE --task text-generation --out DIR`)."""
    import edgeagent
    from edgeagent.cli.main import main

    assert edgeagent.export_causal_lm is export_causal_lm
    out = tmp_path / "ir"
    shutil.copytree(llama_ir.path, out)
    (out / "stale.txt").write_text("from the previous export")
    assert main(["export", "tests.causal.fixture_models:tiny_llama_model", "--task", "text-generation",
                 "--out", str(out), "--max-length", "64"]) == 0
    printed = capsys.readouterr().out
    assert "exported llama decoder" in printed and "greedy continuations identical 5/5" in printed
    ir = open_decoder_ir(out)
    assert ir.metadata["source"] == "python:tests.causal.fixture_models:tiny_llama_model"
    assert ir.metadata["max_length"] == 64 and not (out / "stale.txt").exists()
    assert _leftovers(tmp_path) == []


def test_cli_export_json_compile_and_run_take_the_ir_folder(tiny_gguf, tmp_path, capsys):
    """A .gguf SOURCE needs no --task; --format json describes the folder; compile and run take it."""
    import numpy as np

    from edgeagent.cli.main import main

    gguf, out = tiny_gguf, tmp_path / "ir"
    assert main(["export", str(gguf), "--out", str(out), "--format", "json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["task"] == "text-generation" and "tokenizer.json" in described["files"]
    assert {i["name"] for i in described["inputs"]} >= {"input_ids", "attention_mask", "position_ids"}
    assert main(["compile", str(out), "--backend", "onnxruntime", "--precision", "int4",
                 "--out", str(tmp_path / "int4")]) == 0
    manifest = json.loads((tmp_path / "int4" / "manifest.json").read_text())
    assert manifest["precision"] == "int4" and manifest["recipe"]["name"] == "weight-only"
    capsys.readouterr()
    meta = described["metadata"]
    feeds = {"input_ids": np.array([[1, 5, 7]], np.int64), "attention_mask": np.ones((1, 3), np.int64),
             "position_ids": np.arange(3, dtype=np.int64)[None]}
    for layer in range(meta["num_layers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = np.zeros((1, meta["num_kv_heads"], 0, meta["head_dim"]),
                                                                np.float32)
    np.savez(tmp_path / "feeds.npz", **feeds)
    for model in (out, tmp_path / "int4"):
        assert main(["run", str(model), "--inputs", str(tmp_path / "feeds.npz"), "--format", "json"]) == 0
        outputs = json.loads(capsys.readouterr().out)["outputs"]
        assert outputs["logits"]["shape"] == [1, 3, meta["vocab_size"]]


def test_cli_export_refuses_max_length_without_text_generation(capsys):
    from edgeagent.cli.main import main

    assert main(["export", "edgeagent.examples:tiny_classifier", "--out", "x.onnx", "--max-length", "8"]) == 1
    assert "--max-length applies to --task text-generation" in capsys.readouterr().err


def test_drifting_model_fails_parity_and_writes_nothing(tmp_path):
    out = tmp_path / "ir"
    with pytest.raises(ExportMismatch) as err:
        export_causal_lm("tests.causal.fixture_models:drifting_llama", out)
    report = err.value.report
    assert {r["check"] for r in report} == {"prefill", "decode", "greedy"}
    logits_rows = [r for r in report if r["output"] == "logits"]
    assert logits_rows and not any(r["ok"] for r in logits_rows)
    assert all(abs(r["max_abs_diff"] - 0.5) < 1e-3 for r in logits_rows)
    assert "prefill logits" in str(err.value) or "decode logits" in str(err.value)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    import transformers

    from tests.decoders import tiny_tokenizer

    folder = tmp_path / "gpt2"
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=384, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(UnsupportedModel, match=r"'gpt2'.*llama.*qwen2"):
        export_causal_lm(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_sliding_window_qwen2_is_refused(qwen2_dir, tmp_path):
    folder = tmp_path / "qwen2-sw"
    shutil.copytree(qwen2_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(use_sliding_window=True, sliding_window=16)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="use_sliding_window"):
        export_causal_lm(folder, tmp_path / "out")


def test_unsupported_gguf_architecture(tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    key = b"general.architecture"
    at = data.find(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4 + 8
    assert data[at:at + 5] == b"llama"
    bad = tmp_path / "bloom.gguf"
    bad.write_bytes(data[:at] + b"bloom" + data[at + 5:])
    with pytest.raises(UnsupportedModel, match="'bloom'.*llama"):
        export_causal_lm(bad, tmp_path / "out")


def test_corrupt_gguf_is_rejected_before_transformers(tiny_gguf, tmp_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:-100])
    with pytest.raises(ModelRejected, match="beyond the file"):
        export_causal_lm(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickled_weights_are_never_unpickled(llama_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(llama_dir / "config.json", folder)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(ModelRejected, match="pickled"):
        export_causal_lm(folder, tmp_path / "out")
    assert not marker.exists()


def test_truncated_safetensors_is_rejected(llama_dir, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(llama_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelRejected, match="truncated") as err:
        export_causal_lm(folder, tmp_path / "out")
    assert err.value.location == "data_offsets"
    weights.write_bytes(b"\x10\x00")
    with pytest.raises(ModelRejected, match="truncated"):
        export_causal_lm(folder, tmp_path / "out")


@pytest.mark.parametrize("kwargs, field", [({"max_length": 129}, "max_length"), ({"max_length": 0}, "max_length"),
                                           ({"opset": 17}, "opset")])
def test_bad_arguments(llama_dir, tmp_path, kwargs, field):
    with pytest.raises(InputError) as err:
        export_causal_lm(llama_dir, tmp_path / "out", **kwargs)
    assert err.value.field == field and not (tmp_path / "out").exists()


def test_bad_sources_and_outputs(llama_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("not an IR")
    with pytest.raises(InputError, match="not a decoder IR"):
        export_causal_lm(llama_dir, tmp_path / "busy")
    with pytest.raises(InputError, match="not a .gguf"):
        export_causal_lm(tmp_path / "busy" / "mine.txt", tmp_path / "out")
    with pytest.raises(InputError, match="must return a transformers causal LM"):
        export_causal_lm("tests.causal.fixture_models:not_a_model", tmp_path / "out")
    with pytest.raises(InputError, match="cannot import"):
        export_causal_lm("tests.causal.no_such_module:f", tmp_path / "out")
    with pytest.raises(InputError, match="no config.json"):
        export_causal_lm(tmp_path / "busy", tmp_path / "out")
    with pytest.raises(ModelRejected, match="ir.json"):
        open_decoder_ir(tmp_path / "busy")
