"""The bench harness (issue 19, defects 6, 8, 11 and 13): the gate fails failed cells and says what it
could not check, corrupt journals are typed errors, a cell process that cannot start is that cell's
error, and a killed run leaves nothing in $TMPDIR."""

from __future__ import annotations

import json
import subprocess
import tempfile

import pytest

from edgeagent.bench.process import Limits, run_stage
from edgeagent.bench.results import JOURNAL_SCHEMA, journal_path
from edgeagent.cli.main import main
from tests import models

QUICKER = ["--repeats", "1", "--min-calls", "5", "--min-time", "0", "--warmup", "1", "--batch", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    return models.mlp_classifier(folder / "mlp.onnx"), models.blobs_eval_npz(folder / "eval.npz", n=64)


def test_the_gate_fails_a_cell_that_crashed_and_says_the_target_has_no_budgets(files, tmp_path, monkeypatch,
                                                                               capsys):
    """Defect 6: a SIGSEGV at load gave "budget gate passed" and exit 0; a target with no budgets
    passed silently."""
    import edgeagent

    model, data = files
    artifact = edgeagent.compile(model, "onnxruntime", "int8", out=tmp_path / "mlp-int8")  # no compile cell
    monkeypatch.setenv("EDGEAGENT_BENCH_FAULT", "load:segv:int8")
    out = tmp_path / "r.json"
    assert main(["bench", str(artifact.path), "--eval", str(data), *QUICKER, "--gate", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "gate FAILED" in err and "int8" in err and "crashed" in err and "SIGSEGV" in err
    assert "target 'host' sets no budgets" in err


def test_the_gate_fails_a_run_that_measured_nothing():
    from edgeagent.bench import gate

    failures, notes = gate({"target": {"name": "t", "budgets": {"p90_latency_ms": 5.0}},
                            "benchmarks": [{"name": "a", "status": "skipped", "message": "no device"}]})
    assert failures == ["no cell was measured (every cell was skipped or failed), so nothing passed"]
    assert notes == ["1 cell(s) skipped here and not gated: a"]
    failures, notes = gate({"target": {"name": "t", "budgets": {"p90_latency_ms": None}},
                            "benchmarks": [{"name": "a", "status": "ok"}]})
    assert failures == [] and "sets no budgets" in notes[0]


@pytest.mark.parametrize("line", ['{"cell": 5}', '{"cell": {"name": 3, "status": "ok"}}', "[1, 2]",
                                  '{"cell": {"name": "x", "status": "exploded"}}', "9" * 5000])
def test_a_corrupt_journal_record_is_a_results_error(files, tmp_path, line, capsys):
    """Defect 11: a corrupt journal record was a KeyError or TypeError: "internal error", exit 2."""
    model, _ = files
    out = tmp_path / "r.json"
    header = json.dumps({"journal": JOURNAL_SCHEMA, "fingerprint": {}})
    journal_path(out).write_text(f"{header}\n{line}\n{line}\n")
    assert main(["bench", str(model), "--backends", "onnxruntime", "--precisions", "fp32", *QUICKER,
                 "--resume", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "corrupt at line 2" in err and "internal error" not in err


def test_a_cell_process_that_cannot_start_is_an_error_outcome(tmp_path):
    """Defect 8: a memory limit near 2**63 raised in preexec_fn and took the whole bench down (exit 2,
    a journal left behind, a work folder leaked)."""
    outcome = run_stage("baseline", {"backend": "onnxruntime", "name": "b"}, timeouts={"load": 30},
                        log=tmp_path / "b.log", limits=Limits(memory_bytes=2**63 - 1))
    assert outcome.status == "error" and "could not start" in outcome.message
    assert list(tmp_path.iterdir()) == [tmp_path / "b.log"]  # its spec file is gone too


def test_worker_specs_go_beside_the_log_not_into_tmpdir(tmp_path, monkeypatch):
    """Defect 13: a killed bench left its spec files in $TMPDIR."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen = {}

    def refuse(argv, **_):
        seen["spec"] = argv[4]
        raise OSError("no processes today")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    (tmp_path / "work").mkdir()
    run_stage("baseline", {"name": "b"}, timeouts={"load": 30}, log=tmp_path / "work" / "b.log")
    assert seen["spec"].startswith(str(tmp_path / "work")) and list(scratch.iterdir()) == []


def test_the_work_folder_sits_beside_the_results_and_a_stale_one_is_removed(files, tmp_path, monkeypatch):
    """Defect 13: a killed bench left its work folder in $TMPDIR, which --resume neither reused nor cleaned."""
    from edgeagent.bench import runner

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "r.json"
    stale = tmp_path / ".r.json.work"
    (stale / "old-cell").mkdir(parents=True)
    used = []

    def fake_cell(cell, context):
        used.append(context.workdir)
        assert not (context.workdir / "old-cell").exists()
        return {"name": cell.name, "model": cell.model, "backend": cell.backend, "precision": cell.precision,
                "status": "skipped", "message": "stub"}

    monkeypatch.setattr(runner, "run_cell", fake_cell)
    monkeypatch.setattr(runner, "baselines", lambda backends, context: {})
    model, _ = files
    assert main(["bench", str(model), "--backends", "onnxruntime", "--precisions", "fp32", *QUICKER,
                 "--out", str(out)]) == 0
    assert used == [stale] and not stale.exists() and list(scratch.iterdir()) == []
