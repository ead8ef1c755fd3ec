"""Adding a workload is one new file plus an entry point.

The test writes a toy text-classification workload into a folder of its own, registers it the
way an installed package would (a dist-info folder with an `edgeagent.workloads` entry point),
and runs `bench`, an agent's reading and `compare` on it without touching edgeagent's modules.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from edgeagent.cli.main import main

pytest.importorskip("tokenizers")

WORKLOAD_FILE = textwrap.dedent('''
    """A toy workload: which of three things an utterance is about."""

    import numpy as np

    from edgeagent.data import Dataset
    from edgeagent.tasks.sequence_classification import SequenceClassificationTask

    LABELS = ["lights", "music", "weather"]
    SENTENCES = [("turn on the lights", 0), ("dim the lamp please", 0), ("lights off now", 0),
                 ("play some music", 1), ("next song please", 1), ("pause the music now", 1),
                 ("will it rain today", 2), ("is it sunny outside", 2), ("what is the weather", 2)]


    class Toy:
        name = "toy"
        primary_metric = "macro_f1"  # not the first metric the task reports: the gate must follow this

        def __init__(self, tokenizer=None, **_):
            from tokenizers import Tokenizer

            self.tokenizer_path = tokenizer or TOKENIZER
            self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
            self.task = SequenceClassificationTask(LABELS)

        def _padded(self, texts):
            rows = [self.tokenizer.encode(t).ids for t in texts]
            ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
            mask = np.zeros_like(ids)
            for i, row in enumerate(rows):
                ids[i, :len(row)], mask[i, :len(row)] = row, 1
            return {"input_ids": ids, "attention_mask": mask}

        def eval_batches(self, inputs):
            yield self._padded([t for t, _ in SENTENCES]), np.asarray([c for _, c in SENTENCES])

        def timing_feeds(self, inputs, count):
            return [self._padded([t]) for t, _ in SENTENCES[:count]]

        def calibration(self, inputs):
            return Dataset(self.timing_feeds(inputs, len(SENTENCES)))

        def metrics(self, outputs, labels):
            return self.task.metrics(outputs, labels)

        def end_to_end(self, session):
            reader = self.task.reader(self.tokenizer)
            return (lambda text: reader.act(session, text)), [t for t, _ in SENTENCES]
''')


def _tokenizer(path) -> list[str]:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[PAD]", "[UNK]"] + sorted({w for line in ("turn on the lights dim lamp please off now play some music "
                                                        "next song pause will it rain today is sunny outside what "
                                                        "weather",) for w in line.split()})
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(path))
    return words


def _model(path, words: list[str]) -> None:
    """Bag of words: each word's row of evidence for the three classes, summed over real tokens."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    evidence = np.zeros((len(words), 3), np.float32)
    for word, cls in (("lights", 0), ("lamp", 0), ("dim", 0), ("music", 1), ("song", 1), ("play", 1),
                      ("rain", 2), ("sunny", 2), ("weather", 2)):
        evidence[words.index(word), cls] = 4.0
    nodes = [helper.make_node("Gather", ["evidence", "input_ids"], ["per_token"]),
             helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask_3d"]),
             helper.make_node("Mul", ["per_token", "mask_3d"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "sequence_axis"], ["logits"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(evidence, "evidence"),
                     numpy_helper.from_array(np.array([2], np.int64), "last"),
                     numpy_helper.from_array(np.array([1], np.int64), "sequence_axis")])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The workload file and its entry point on sys.path (and on PYTHONPATH, for bench workers)."""
    from edgeagent import workloads

    site = tmp_path / "site"
    site.mkdir()
    words = _tokenizer(site / "toy_tokenizer.json")
    (site / "toy_workload.py").write_text(WORKLOAD_FILE + f"\nTOKENIZER = {str(site / 'toy_tokenizer.json')!r}\n")
    info = site / "toy_workload-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-workload\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgeagent.workloads]\ntoy = toy_workload:Toy\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    workloads._registered.cache_clear()
    _model(tmp_path / "toy.onnx", words)
    yield tmp_path
    workloads._registered.cache_clear()
    sys.modules.pop("toy_workload", None)


def test_a_workload_added_as_one_file_runs_through_bench_agent_and_compare(toy, capsys):
    from edgeagent.agent.runtime import EdgeAgent, write_agent_folder
    from edgeagent.workloads import get_workload, list_workloads

    assert "toy" in list_workloads()
    workload = get_workload("toy")
    # bench: the cell's worker process finds the workload through the same entry point.
    quick = ["--backends", "onnxruntime", "--precisions", "fp32", "--repeats", "1", "--min-calls", "20",
             "--min-time", "0.05", "--warmup", "2", "--batch", "1"]
    assert main(["bench", str(toy / "toy.onnx"), "--workload", "toy", *quick, "--out", str(toy / "r.json")]) == 0
    cell = json.loads((toy / "r.json").read_text())["benchmarks"][0]
    assert cell["status"] == "ok", cell.get("message")
    assert cell["accuracy"] == {"accuracy": 1.0, "macro_f1": 1.0} and cell["primary_metric"] == "macro_f1"
    assert cell["end_to_end"]["stats"]["rounds"] >= 20  # the task's reader, timed end to end

    # Reading: an agent folder whose task is the workload's.
    import edgeagent

    folder = toy / "agent"
    edgeagent.compile(toy / "toy.onnx", "onnxruntime", "fp32", out=folder / "onnxruntime-fp32")
    write_agent_folder(folder, workload.task, tokenizer=workload.tokenizer_path)
    agent = EdgeAgent.load(folder)
    assert agent.act("could you play a song").intent == "music"
    assert [c.intent for c in agent.act_batch(["rain today", "", "dim lamp"])] == \
        ["weather", "not_understood", "lights"]
    capsys.readouterr()
    assert main(["agent", "predict", "is it sunny", "--artifacts", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["intent"] == "weather"

    # compare gates on the workload's primary metric, macro_f1, not on the first one reported.
    worse = json.loads((toy / "r.json").read_text())
    worse["benchmarks"][0]["accuracy"]["macro_f1"] = 0.5
    (toy / "worse.json").write_text(json.dumps(worse))
    assert main(["compare", str(toy / "r.json"), str(toy / "r.json")]) == 0
    capsys.readouterr()
    assert main(["compare", str(toy / "r.json"), str(toy / "worse.json"), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["regressions"] == 1 and "macro_f1" in report["cells"][0]["reasons"][0]
