"""Distillation on real ha-intents data with a tiny teacher (the real teacher is in benchmarks/)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("hassil")

import edgeagent  # noqa: E402
from edgeagent.distill import load_joint, save_joint, student_from_teacher  # noqa: E402
from edgeagent.distill.models import joint_encoder  # noqa: E402
from edgeagent.distill.trainer import predict  # noqa: E402
from edgeagent.distill.workflow import export_model  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402
from edgeagent.workloads import ha_intents  # noqa: E402

pytestmark = pytest.mark.torch
TASK = ha_intents.task()
OUTPUTS = [head.output for head in TASK.heads]
FAST = dict(task=TASK, batch_size=64, progress=False)


def score(model, examples):
    return TASK.score(predict(model, examples, output_names=OUTPUTS), examples)


def tiny_teacher(train, tokenizer, seed: int = 0):
    """Two layers of width 48 over the task's own vocabulary: fine-tunes in seconds."""
    from edgeagent.distill.models import task_vocabulary

    kept = task_vocabulary([e["input_ids"] for e in train], tokenizer.get_vocab())
    token_map = torch.full((tokenizer.get_vocab_size(),), kept.index(tokenizer.token_to_id("[UNK]")))
    token_map[torch.tensor(kept)] = torch.arange(len(kept))
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(kept), hidden_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=96)
    intents, tags = ha_intents.label_space()
    return joint_encoder(transformers.BertModel(config, add_pooling_layer=False), len(intents), len(tags),
                         token_map)


@pytest.fixture(scope="module")
def workload():
    return ha_intents.HAIntents(split="dev")


@pytest.fixture(scope="module")
def data(workload):
    train = workload.training_examples("train")[:1000]
    dev = workload.training_examples("dev")[:300]
    return workload.tokenizer, train, dev


@pytest.fixture(scope="module")
def teacher(data):
    tokenizer, train, dev = data
    model = edgeagent.distill.finetune(tiny_teacher(train, tokenizer), train, eval=dev, epochs=3, lr=3e-3, **FAST)
    assert score(model, dev)["intent_accuracy"] > 0.5
    return model


def _student(teacher, train, tokenizer, **shape):
    return student_from_teacher(teacher, layers=shape.pop("layers", 1), hidden=shape.pop("hidden", 32),
                                task_data=[e["input_ids"] for e in train], tokenizer=tokenizer,
                                common_tokens=shape.pop("common_tokens", 0), **shape)


def test_student_factory_prunes_the_vocabulary_and_remaps_ids(teacher, data):
    tokenizer, train, _ = data
    student = _student(teacher, train, tokenizer)
    vocab = tokenizer.get_vocab()
    used = {int(i) for e in train for i in e["input_ids"]}
    kept = student.init_report["vocab"]
    assert kept == len(used | {vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")})
    assert kept < 3000 and student.encoder.embeddings.word_embeddings.weight.shape[0] == kept
    unseen = next(i for i in range(1000, 30000) if i not in used)
    assert int(student.token_map[unseen]) == int(student.token_map[vocab["[UNK]"]])
    assert len({int(student.token_map[i]) for i in used}) == len(used)  # seen tokens stay distinct
    same_hidden = student_from_teacher(teacher, layers=1, task_data=[e["input_ids"] for e in train],
                                       tokenizer=tokenizer, common_tokens=0)
    assert torch.equal(same_hidden.encoder.encoder.layer[0].attention.self.query.weight,
                       teacher.encoder.encoder.layer[0].attention.self.query.weight)  # copied from the teacher
    wider = _student(teacher, train, tokenizer, common_tokens=5000)
    assert wider.init_report["vocab"] > kept + 3000  # common words kept for names unseen in training
    assert int(wider.token_map[vocab["cellar"]]) != int(wider.token_map[vocab["[UNK]"]])


def test_distillation_transfers_the_teacher_and_is_reproducible(teacher, data):
    tokenizer, train, dev = data
    students = []
    for _ in range(2):
        student = _student(teacher, train, tokenizer)
        before = score(student, dev)
        students.append(edgeagent.distill(teacher, student, train, eval=dev, epochs=4, lr=5e-3, seed=5, **FAST))
    after = score(students[0], dev)
    taught = score(teacher, dev)
    assert after["intent_accuracy"] > before["intent_accuracy"]
    assert after["intent_accuracy"] >= 0.8 * taught["intent_accuracy"]
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values()):
        assert torch.equal(a, b)  # same seed, same student


def test_length_grouped_batches_cover_every_example_once_and_pad_less(data):
    from edgeagent.distill.trainer import _batches

    _, train, _ = data
    lengths = [len(e["input_ids"]) for e in train]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    shuffled = _batches(lengths, 32, torch.Generator().manual_seed(3), torch)
    grouped = _batches(lengths, 32, torch.Generator().manual_seed(3), torch, group_by_length=True)
    assert sorted(i for b in grouped for i in b) == list(range(len(train)))
    assert all(len(b) <= 32 for b in grouped)
    assert padded(grouped) < 0.8 * padded(shuffled)  # measured: 0.64 of tokens real shuffled, > 0.9 grouped
    assert grouped == _batches(lengths, 32, torch.Generator().manual_seed(3), torch, group_by_length=True)
    assert grouped != _batches(lengths, 32, torch.Generator().manual_seed(4), torch, group_by_length=True)


def test_length_grouped_distillation_learns_as_well_as_shuffled_batches(teacher, data):
    tokenizer, train, dev = data
    taught = score(teacher, dev)["intent_accuracy"]
    scores = {}
    for grouped in (False, True):
        student = edgeagent.distill(teacher, _student(teacher, train, tokenizer), train, eval=dev, epochs=4, lr=5e-3,
                                    seed=5, group_by_length=grouped, **FAST)
        scores[grouped] = score(student, dev)["intent_accuracy"]
    assert scores[True] >= 0.8 * taught
    assert scores[True] >= scores[False] - 0.1


def test_bf16_autocast_distils_as_well_and_keeps_float32_weights(teacher, data):
    """bf16 changes the arithmetic (the students differ), not the outcome or the stored weights."""
    tokenizer, train, dev = data
    students = {}
    for bf16 in (False, True):
        students[bf16] = edgeagent.distill(teacher, _student(teacher, train, tokenizer), train, eval=dev, epochs=4,
                                           lr=5e-3, seed=5, hidden_loss="mse", bf16=bf16, **FAST)
    plain, autocast = students[False], students[True]
    assert autocast.training_bf16 == {"used": True, "why": "asked"}
    assert [h["bf16"] for h in autocast.training_history] == [True] * len(autocast.training_history)
    assert all(p.dtype == torch.float32 for p in autocast.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), autocast.state_dict().values()))
    taught = score(teacher, dev)["intent_accuracy"]
    assert score(autocast, dev)["intent_accuracy"] >= max(0.8 * taught, score(plain, dev)["intent_accuracy"] - 0.05)
    with pytest.raises(InputError, match="bf16 must be"):
        edgeagent.distill(teacher, _student(teacher, train, tokenizer), train, bf16="yes", **FAST)


def test_bf16_auto_follows_the_cpu(monkeypatch):
    from edgeagent import hostinfo

    monkeypatch.setattr(hostinfo, "_cpuinfo", lambda: {"flags": "sse avx2 avx512f"})
    assert hostinfo.resolve_bf16("auto")[0] is False
    monkeypatch.setattr(hostinfo, "_cpuinfo", lambda: {"flags": "sse avx2 avx512f avx512_bf16"})
    assert hostinfo.resolve_bf16("auto") == (True, "auto: the CPU has avx512_bf16")
    assert hostinfo.resolve_bf16(False) == (False, "asked")


def test_unlabelled_transfer_data_uses_the_teacher_as_labels(teacher, data):
    tokenizer, train, dev = data
    unlabelled = [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]} for e in train]
    student = edgeagent.distill(teacher, _student(teacher, train, tokenizer), unlabelled, epochs=2, lr=3e-3,
                                **FAST)
    teacher_pred = [p["intent_logits"].argmax() for p in predict(teacher, dev, output_names=OUTPUTS)]
    student_pred = [p["intent_logits"].argmax() for p in predict(student, dev, output_names=OUTPUTS)]
    assert np.mean(np.equal(teacher_pred, student_pred)) > 0.5


def test_transfer_examples_vary_names_with_the_teachers_own_embeddings(teacher, data, workload):
    from edgeagent.distill.augment import NeighbourWords

    tokenizer, train, _ = data
    # The tiny teacher keeps only the task's vocabulary: words it maps to [UNK] are never offered.
    words = NeighbourWords.from_teacher(teacher, tokenizer)
    unk_row = int(teacher.token_map[tokenizer.token_to_id("[UNK]")])
    kept = {w for w, i in tokenizer.get_vocab().items() if int(teacher.token_map[i]) != unk_row}
    offered = {n for w in ("light", "kitchen", "lamp", "turn") for n in words.neighbours(w)}
    assert offered and offered <= kept
    extra = workload.transfer_examples(teacher, 3)
    assert len(extra) >= 3 * 40 and {"input_ids", "attention_mask", "intent", "tags"} <= set(extra[0])
    assert all(len(e["tags"]) == len(e["input_ids"]) for e in extra)


def test_bad_input_is_refused_before_training(teacher, data):
    tokenizer, train, _ = data
    student = _student(teacher, train, tokenizer)
    with pytest.raises(InputError, match="empty"):
        edgeagent.distill(teacher, student, [], **FAST)
    bad = [dict(e) for e in train[:10]]
    bad[3]["intent"] = np.int64(999)
    with pytest.raises(InputError, match="outside the label set"):
        edgeagent.distill(teacher, student, bad, **FAST)
    teacher.train()
    try:
        with pytest.raises(InputError, match="teacher.eval"):
            edgeagent.distill(teacher, student, train[:10], **FAST)
    finally:
        teacher.eval()
    wrong = joint_encoder(transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        add_pooling_layer=False), 3, len(ha_intents.label_space()[1]))
    with pytest.raises(InputError, match="heads must match"):
        edgeagent.distill(teacher, wrong, train[:10], **FAST)


def test_the_distill_command_trains_with_length_grouped_batches(teacher, tmp_path, capsys):
    from edgeagent.cli.main import main

    save_joint(teacher, tmp_path / "teacher", labels=TASK.to_json(), tokenizer=ha_intents.default_tokenizer_path())
    code = main(["distill", "--workload", "ha-intents", "--teacher", str(tmp_path / "teacher"),
                 "--student", "layers=1,hidden=32,common_tokens=0", "--limit", "300", "--epochs", "2", "--lr", "5e-3",
                 "--group-by-length", "--no-export", "--out", str(tmp_path / "student")])
    assert code == 0
    assert "test intent_accuracy" in capsys.readouterr().out
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert [h["epoch"] for h in config["history"]] == [1, 2]


def test_checkpoints_resume_and_round_trip(teacher, data, tmp_path):
    tokenizer, train, dev = data
    full = edgeagent.distill(teacher, _student(teacher, train, tokenizer), train[:400], eval=dev, epochs=2,
                             lr=3e-3, patience=5, checkpoint_dir=tmp_path / "a", **FAST)
    calls = []

    def killed_in_epoch_two(predictions, examples):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run dies after epoch 1's checkpoint
        return TASK.training_metric(predictions, examples)

    with pytest.raises(KeyboardInterrupt):
        edgeagent.distill(teacher, _student(teacher, train, tokenizer), train[:400], eval=dev, epochs=2,
                          lr=3e-3, patience=5, checkpoint_dir=tmp_path / "b", metric=killed_in_epoch_two, **FAST)
    assert (tmp_path / "b" / "last.safetensors").is_file()
    resumed = edgeagent.distill(teacher, _student(teacher, train, tokenizer), train[:400], eval=dev, epochs=2,
                                lr=3e-3, patience=5, checkpoint_dir=tmp_path / "b", resume=True, **FAST)
    assert [h["epoch"] for h in resumed.training_history] == [1, 2]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)  # an interrupted run ends where a whole one does
    folder = save_joint(full, tmp_path / "student", labels=TASK.to_json())
    loaded = load_joint(folder)
    ids = torch.as_tensor(train[0]["input_ids"])[None]
    assert torch.allclose(loaded(ids, torch.ones_like(ids))[0], full(ids, torch.ones_like(ids))[0], atol=1e-6)


def test_the_student_exports_and_runs_on_every_backend(teacher, data, tmp_path, monkeypatch):
    # onnxruntime's symbolic shape inference gives up on this graph and, left alone, saves a debug
    # model into the current directory; edgeagent runs it from a scratch folder.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    tokenizer, train, dev = data
    student = _student(teacher, train, tokenizer)
    path = export_model(TASK, student, tmp_path / "student.onnx")
    ir = edgeagent.load(path)
    assert [s.name for s in ir.inputs] == ["input_ids", "attention_mask"]
    workload = ha_intents.HAIntents(split="dev", limit=64)
    for backend in [r["name"] for r in edgeagent.list_backends() if r["available"]]:
        for precision in ("fp32", "int8"):
            calibration = workload.calibration(ir.inputs) if precision == "int8" else None
            artifact = edgeagent.compile(ir, backend, precision, calibration=calibration,
                                         out=tmp_path / f"{backend}-{precision}")
            with edgeagent.load_session(artifact) as session:
                feeds = workload.timing_feeds(session.inputs, 1)[0]
                out = session.run(feeds)
                assert out["slot_logits"].shape[:2] == feeds["input_ids"].shape
    # TensorRT is not here, but the QDQ graph it would build INT8 from is, and runs on CPU.
    from edgeagent.backends.tensorrt.qdq import prepare_qdq

    qdq, summary = prepare_qdq(ir, workload.calibration(ir.inputs))
    assert summary["quantized_ops"].get("MatMul")
    import onnxruntime as ort

    outputs = ort.InferenceSession(qdq.SerializeToString()).run(None, feeds)
    assert outputs[1].shape[:2] == feeds["input_ids"].shape
    assert sorted(p.name for p in work.iterdir()) == []


def test_compact_bert_computes_what_bert_model_does_with_a_leaner_graph(teacher, data, tmp_path):
    from edgeagent.distill.models import compact_bert

    config = transformers.BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=96, attn_implementation="eager")
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    compact = compact_bert(transformers.BertConfig.from_dict(config.to_dict())).eval()
    compact.load_state_dict(bert.state_dict())  # the same parameter names and shapes
    ids = torch.randint(0, 300, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.int64)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    got = compact(ids, mask).last_hidden_state
    assert torch.allclose(expected[mask.bool()], got[mask.bool()], atol=1e-5)

    tokenizer, train, _ = data
    students = {arch: _student(teacher, train, tokenizer, architecture=arch).eval() for arch in ("compact", "bert")}
    nodes = {}
    for arch, student in students.items():
        path = export_model(TASK, student, tmp_path / f"{arch}.onnx")
        nodes[arch] = len(edgeagent.load(path).proto().graph.node)
    assert nodes["compact"] < nodes["bert"] - 15  # the mask bookkeeping is gone
    # On onnxruntime every attention block of the dynamo export fuses into one Attention node,
    # and the fused graph computes what the plain one does, padding included.
    fused = edgeagent.compile(tmp_path / "compact.onnx", "onnxruntime", "fp32", out=tmp_path / "fused")
    assert fused.recipe["fusions"]["fused_ops"]["Attention"] == students["compact"].encoder.config.num_hidden_layers
    # SkipLayerNormalization measured slower than Add + LayerNormalization: off unless asked for.
    assert "SkipLayerNormalization" not in fused.recipe["fusions"]["fused_ops"]
    assert fused.recipe["disabled_optimizers"] == ["SkipLayerNormFusion"]
    skip = edgeagent.compile(tmp_path / "compact.onnx", "onnxruntime", "fp32", out=tmp_path / "skip",
                             options={"skip_layer_norm": "true"})
    assert skip.recipe["fusions"]["fused_ops"]["SkipLayerNormalization"] >= 2
    assert skip.recipe["disabled_optimizers"] == []
    plain = edgeagent.compile(tmp_path / "compact.onnx", "onnxruntime", "fp32", out=tmp_path / "plain",
                              options={"fusions": "off"})
    feeds = {"input_ids": ids.numpy() % 100 + 1000, "attention_mask": mask.numpy()}
    with edgeagent.load_session(fused) as a, edgeagent.load_session(plain) as b:
        got, want = a.run(feeds), b.run(feeds)
    np.testing.assert_allclose(got["intent_logits"], want["intent_logits"], atol=1e-4)
    valid = mask.numpy().astype(bool)
    np.testing.assert_allclose(got["slot_logits"][valid], want["slot_logits"][valid], atol=1e-4)
    folder = save_joint(students["compact"], tmp_path / "saved", labels=TASK.to_json())
    loaded = load_joint(folder)
    assert type(loaded.encoder).__name__ == "CompactBert"
    example = torch.as_tensor(train[0]["input_ids"])[None]
    assert torch.allclose(loaded(example, torch.ones_like(example))[1],
                          students["compact"](example, torch.ones_like(example))[1], atol=1e-6)
    with pytest.raises(InputError, match="architecture"):
        _student(teacher, train, tokenizer, architecture="lstm")
