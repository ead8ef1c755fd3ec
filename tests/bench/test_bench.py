"""`edgeagent bench`, `report` and `compare` end to end on a small classifier, with real processes.

Failures are injected with the worker's test-only hook (EDGEAGENT_BENCH_FAULT): a real abort,
segfault, hang or MemoryError in a real cell process, which the parent must survive.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgeagent.bench import SCHEMA, load_results
from edgeagent.bench.results import SCHEMA_FILE, journal_path
from edgeagent.cli.main import main
from tests import models

QUICK = ["--repeats", "2", "--min-calls", "20", "--min-time", "0.05", "--warmup", "2", "--batch", "4"]
QUICKER = ["--repeats", "1", "--min-calls", "5", "--min-time", "0", "--warmup", "1", "--batch", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    return folder, models.mlp_classifier(folder / "mlp.onnx"), models.blobs_eval_npz(folder / "eval.npz")


@pytest.fixture(scope="module")
def results(files):
    folder, model, data = files
    out = folder / "r.json"
    code = main(["bench", str(model), "--eval", str(data), "--backends", "onnxruntime",
                 "--precisions", "fp32,int8", *QUICK, "--out", str(out)])
    assert code == 0
    return out


def test_reference_outputs_are_computed_once_per_model_and_inputs(files, tmp_path):
    import shutil

    import numpy as np

    from edgeagent.bench.worker import _cached_reference_outputs
    from edgeagent.errors import ModelRejected

    _, model, _ = files
    copy = shutil.copyfile(model, tmp_path / "m.onnx")
    x, _ = models.blobs(40, seed=5)
    batches = [{"x": x[:20].astype(np.float32)}, {"x": x[20:].astype(np.float32)}]
    cache = {"path": str(tmp_path / "reference.npz"), "model": "sha-of-m"}
    first = _cached_reference_outputs(str(copy), batches, cache)
    copy.unlink()  # from now on only the cache can answer
    again = _cached_reference_outputs(str(copy), batches, cache)
    assert again.keys() == first.keys() and all(np.array_equal(again[k], first[k]) for k in first)
    other_inputs = [{"x": batches[0]["x"] + 1}]
    with pytest.raises(ModelRejected):  # other inputs: recomputed from the (missing) model
        _cached_reference_outputs(str(copy), other_inputs, cache)
    with pytest.raises(ModelRejected):  # another model: recomputed too
        _cached_reference_outputs(str(copy), batches, {**cache, "model": "sha-of-another"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.npz"]  # no partial files left


def test_results_follow_the_documented_schema(results):
    import jsonschema

    document = json.loads(results.read_text())
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))
    assert document["schema"] == SCHEMA and document["complete"] is True
    assert not journal_path(results).exists()  # a finished run leaves no journal


def test_every_cell_has_latency_memory_accuracy_and_provenance(results):
    document = load_results(results)
    names = [c["name"] for c in document["benchmarks"]]
    assert names == ["mlp[onnxruntime/fp32@host]", "mlp[onnxruntime/int8@host]"]
    for cell in document["benchmarks"]:
        assert cell["status"] == "ok", cell.get("message")
        stats = cell["stats"]
        assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
        assert stats["rounds"] >= 2 * 20 and len(cell["repeats"]) == 2
        assert cell["spread"]["p50"]["min"] <= stats["p50"] <= cell["spread"]["p50"]["max"]
        assert cell["cold_start"]["compile_s"] > 0 and cell["cold_start"]["load_s"] > 0
        assert cell["cold_start"]["first_inference_s"] > 0
        memory = cell["memory"]
        assert memory["peak_rss_bytes"] > memory["import_baseline_rss_bytes"] > 0
        assert cell["size_bytes"] > 0 and len(cell["artifact_sha256"]) == 64
        assert cell["accuracy"]["accuracy"] >= 0.95 and 0 < cell["accuracy"]["macro_f1"] <= 1
        assert cell["agreement"]["top1"] >= 0.98
        assert cell["throughput"]["batch"] == 4 and cell["throughput"]["items_per_s"] > 0
        assert cell["eval_samples"] == 300 and cell["threads"] >= 1
    fp32, int8 = document["benchmarks"]
    assert fp32["agreement"]["max_abs_diff"] == pytest.approx(0, abs=1e-5)
    assert int8["agreement"]["max_abs_diff"] > 0  # quantized outputs really differ
    assert int8["accuracy_drop"]["reference"] == fp32["name"]
    assert int8["recipe"]["name"] == "static"  # calibrated from the eval inputs
    machine = document["machine_info"]
    assert machine["software"]["onnxruntime"] and machine["software"]["numpy"]
    assert "avx2" in machine["cpu_flags"] and machine["usable_cpus"] >= 1
    assert document["target"]["name"] == "host" and document["target"]["emulated"] is False
    assert "id" in document["commit_info"]


def test_report_writes_markdown_csv_and_plot(results, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    md, table, png = tmp_path / "r.md", tmp_path / "r.csv", tmp_path / "r.png"
    assert main(["report", str(results), "--md", str(md), "--csv", str(table), "--plot", str(png)]) == 0
    text = md.read_text()
    assert "mlp[onnxruntime/int8@host]" in text and "| p50_ms |" in text.replace("cell | status | ", "")
    rows = list(csv.DictReader(table.open()))
    assert [r["cell"] for r in rows] == ["mlp[onnxruntime/fp32@host]", "mlp[onnxruntime/int8@host]"]
    assert float(rows[0]["p50_ms"]) > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_compare_passes_on_itself_and_fails_on_a_regression(results, tmp_path, capsys):
    pytest.importorskip("scipy", reason="compare's confidence intervals need the stats extra")
    assert main(["compare", str(results), str(results)]) == 0
    slower = json.loads(results.read_text())
    cell = slower["benchmarks"][1]
    for run in [cell["stats"], *cell["repeats"]]:  # every call three times slower
        for key in ("p50", "p90", "median"):
            run[key] *= 3
        run["quantiles"] = [q * 3 for q in run["quantiles"]]
    for key in ("p50", "p90"):
        cell["spread"][key] = {"min": cell["spread"][key]["min"] * 3, "max": cell["spread"][key]["max"] * 3}
    (tmp_path / "slow.json").write_text(json.dumps(slower))
    capsys.readouterr()
    assert main(["compare", str(results), str(tmp_path / "slow.json"), "--format", "json"]) == 1
    verdicts = {c["name"]: c["verdict"] for c in json.loads(capsys.readouterr().out)["cells"]}
    assert verdicts == {"mlp[onnxruntime/fp32@host]": "ok", "mlp[onnxruntime/int8@host]": "regression"}

    worse = json.loads(results.read_text())
    worse["benchmarks"][0]["accuracy"]["accuracy"] -= 0.05
    del worse["benchmarks"][1]
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    assert main(["compare", str(results), str(tmp_path / "worse.json"), "--max-accuracy-drop", "1"]) == 1
    out = capsys.readouterr().out
    assert "missing from the new results" in out and "accuracy -5.00 points" in out
    assert main(["compare", str(results), str(tmp_path / "worse.json"), "--max-accuracy-drop", "10"]) == 1


@pytest.mark.parametrize("kind, status", [("crash", "crashed"), ("segv", "crashed"), ("oom", "oom"),
                                          ("error", "error")])
def test_a_failing_cell_is_recorded_and_the_rest_still_run(files, tmp_path, monkeypatch, kind, status):
    folder, model, data = files
    monkeypatch.setenv("EDGEAGENT_BENCH_FAULT", f"first_inference:{kind}:int8")
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--eval", str(data), "--backends", "onnxruntime",
                 "--precisions", "int8,fp32", *QUICKER, "--out", str(out)]) == 0
    cells = {c["precision"]: c for c in load_results(out)["benchmarks"]}
    assert cells["int8"]["status"] == status and cells["int8"]["stage"] == "first_inference"
    if kind in ("crash", "segv"):
        assert ("SIGABRT" if kind == "crash" else "SIGSEGV") in cells["int8"]["message"]
    assert cells["fp32"]["status"] == "ok" and cells["fp32"]["accuracy"]["accuracy"] >= 0.95


def test_a_hanging_stage_times_out(files, tmp_path, monkeypatch):
    folder, model, data = files
    monkeypatch.setenv("EDGEAGENT_BENCH_FAULT", "timed:hang:fp32")
    out = tmp_path / "r.json"
    start = time.monotonic()
    assert main(["bench", str(model), "--eval", str(data), "--backends", "onnxruntime", "--precisions",
                 "fp32,int8", *QUICKER, "--timeout", "run=3", "--out", str(out)]) == 0
    assert time.monotonic() - start < 60
    cells = {c["precision"]: c for c in load_results(out)["benchmarks"]}
    assert cells["fp32"]["status"] == "timeout" and cells["fp32"]["stage"] == "timed"
    assert "3 s timeout" in cells["fp32"]["message"]
    assert cells["int8"]["status"] == "ok"


def test_a_killed_run_resumes_without_duplicates(files, tmp_path):
    folder, model, data = files
    out = tmp_path / "r.json"
    argv = [sys.executable, "-m", "edgeagent.cli.main", "bench", str(model), "--eval", str(data),
            "--backends", "onnxruntime", "--precisions", "fp32,int8,fp16", *QUICKER, "--out", str(out)]
    # A SIGKILLed run cannot clean its temporary folders: keep them in tmp_path, not the system's.
    quiet_tmp = {**os.environ, "TMPDIR": str(tmp_path)}
    # The second cell hangs, so the run is reliably midway when it is killed.
    env = {**quiet_tmp, "EDGEAGENT_BENCH_FAULT": "load:hang:int8"}
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    journal = journal_path(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
        time.sleep(0.2)
    time.sleep(1.0)  # let the hanging cell start
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_run = [json.loads(line)["cell"] for line in journal.read_text().splitlines()[1:]]
    assert [c["name"] for c in first_run] == ["mlp[onnxruntime/fp32@host]"]
    partial = load_results(out)
    assert partial["complete"] is False and len(partial["benchmarks"]) == 1

    refused = subprocess.run(argv, capture_output=True, text=True, env=quiet_tmp)
    assert refused.returncode == 1 and "--resume" in refused.stderr  # never overwrites silently

    done = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=quiet_tmp)
    assert done.returncode == 0, done.stderr
    document = load_results(out)
    names = [c["name"] for c in document["benchmarks"]]
    assert names == ["mlp[onnxruntime/fp32@host]", "mlp[onnxruntime/int8@host]", "mlp[onnxruntime/fp16@host]"]
    assert document["complete"] is True and not journal.exists()
    assert document["benchmarks"][0] == {**first_run[0], **{k: document["benchmarks"][0][k]
                                                            for k in ("budgets", "accuracy_drop")}}


def test_resume_with_other_settings_is_refused(files, tmp_path):
    folder, model, data = files
    out = tmp_path / "r.json"
    journal_path(out).write_text(json.dumps({"journal": "edgeagent.bench.journal/1",
                                             "fingerprint": {"cells": ["other"]}}) + "\n")
    assert main(["bench", str(model), "--backends", "onnxruntime", "--precisions", "fp32", *QUICKER,
                 "--resume", "--out", str(out)]) == 1


@pytest.mark.parametrize("args, message", [
    (["--backends", "onnxruntime,nope"], "registered backends"),
    (["--precisions", "fp8"], "fp32"),
    (["--target", "no-such-board"], "valid targets"),
    (["--workload", "no-such-workload"], "registered workloads"),
    (["--timeout", "bogus=3"], "stages"),
])
def test_bad_grid_input_names_the_valid_choices(files, tmp_path, capsys, args, message):
    folder, model, data = files
    assert main(["bench", str(model), *args, "--out", str(tmp_path / "r.json")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_results_that_do_not_parse_or_have_another_schema_are_refused(results, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "edgeagent.bench/1", "benchm')
    assert main(["report", str(broken)]) == 1
    assert "does not parse" in capsys.readouterr().err
    other = copy.deepcopy(json.loads(results.read_text()))
    other["schema"] = "edgeagent.bench/0"
    (tmp_path / "old.json").write_text(json.dumps(other))
    assert main(["compare", str(results), str(tmp_path / "old.json")]) == 1
    assert "edgeagent.bench/0" in capsys.readouterr().err


def test_an_artifact_runs_as_built(files, tmp_path):
    folder, model, data = files
    artifact = tmp_path / "art"
    assert main(["compile", str(model), "--precision", "int8", "--calibration", str(data),
                 "--out", str(artifact)]) == 0
    out = tmp_path / "r.json"
    assert main(["bench", str(artifact), "--eval", str(data), "--reference", str(model), *QUICKER,
                 "--out", str(out)]) == 0
    (cell,) = load_results(out)["benchmarks"]
    assert cell["name"] == "art[onnxruntime/int8@host]" and cell["model"]["kind"] == "artifact"
    assert cell["status"] == "ok" and cell["cold_start"]["compile_s"] is None
    assert cell["agreement"]["top1"] >= 0.98


def test_bench_and_report_print_json_for_programs(files, results, tmp_path, capsys):
    folder, model, data = files
    capsys.readouterr()
    assert main(["bench", str(model), "--eval", str(data), "--backends", "onnxruntime", "--precisions", "fp32",
                 *QUICKER, "--format", "json", "--out", str(tmp_path / "j.json")]) == 0
    document = json.loads(capsys.readouterr().out)  # nothing but the document on stdout
    assert document["schema"] == SCHEMA and document["benchmarks"][0]["status"] == "ok"
    assert main(["report", str(results), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["benchmarks"] == load_results(results)["benchmarks"]


def test_report_converts_to_pytest_benchmark_listing_what_it_cannot(results, tmp_path, capsys):
    mixed = json.loads(results.read_text())
    failed = copy.deepcopy(mixed["benchmarks"][0])
    failed.update(name="mlp[onnxruntime/fp16@host]", status="crashed", message="died of SIGSEGV")
    for key in ("stats", "memory", "spread", "repeats"):
        failed.pop(key, None)
    mixed["benchmarks"].append(failed)
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    out = tmp_path / "pb.json"
    assert main(["report", str(tmp_path / "mixed.json"), "--format", "pytest-benchmark", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "not converted: mlp[onnxruntime/fp16@host] (crashed: died of SIGSEGV)" in err
    converted = json.loads(out.read_text())
    assert [b["name"] for b in converted["benchmarks"]] == [c["name"] for c in load_results(results)["benchmarks"]]
    assert converted["edgeagent"]["not_converted"][0]["status"] == "crashed"
    # pytest-benchmark's own reader accepts it (it failed with KeyError: 'group' on the native file).
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(out), "--columns", "min,median"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mlp[onnxruntime/fp32@host]" in proc.stdout and "Median" in proc.stdout


def test_results_are_validated_against_the_schema_when_read(results, tmp_path, capsys):
    broken = json.loads(results.read_text())
    del broken["benchmarks"][0]["stats"]  # an ok cell without timings: compare used to die with KeyError
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert main(["compare", str(results), str(tmp_path / "broken.json")]) == 1
    err = capsys.readouterr().err
    assert "does not follow the results schema" in err and "'stats' is a required property" in err
    assert "mlp[onnxruntime/fp32@host]" in err


def test_device_flag_skips_cells_a_backend_cannot_run_there(files, tmp_path):
    import onnxruntime

    folder, model, data = files
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this host has a CUDA build of ONNX Runtime")
    out = tmp_path / "gpu.json"
    assert main(["bench", str(model), "--eval", str(data), "--backends", "onnxruntime", "--precisions", "fp32",
                 "--device", "gpu", *QUICKER, "--out", str(out)]) == 0
    (cell,) = load_results(out)["benchmarks"]
    assert cell["name"] == "mlp[onnxruntime:gpu/fp32@host]" and cell["status"] == "skipped"
    assert "CUDAExecutionProvider" in cell["message"]
