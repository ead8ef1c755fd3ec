"""The edgeagent CLI end to end: exact spellings, JSON output, one-line errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgeagent.cli.main import main
from tests import models


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_backends_json(capsys):
    code, out, _ = run_cli("backends", "--format", "json", capsys=capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["onnxruntime"]["available"] is True
    for name in ("openvino", "tensorrt"):
        assert {"name", "available", "reason", "version", "devices", "precisions"} <= set(rows[name])
    # Whatever this host has, an unavailable backend always says why.
    assert rows["tensorrt"]["available"] or rows["tensorrt"]["reason"]


def test_compile_int8_with_calibration_then_run(mlp_path, tmp_path, capsys):
    x, labels = models.blobs(64, seed=5)
    np.savez(tmp_path / "calib.npz", x=x)
    np.savez(tmp_path / "inputs.npz", x=x[:4])
    code, out, err = run_cli("compile", mlp_path, "--backend", "onnxruntime", "--precision", "int8",
                             "--calibration", tmp_path / "calib.npz", "--out", tmp_path / "art", capsys=capsys)
    assert code == 0, err
    assert "recipe static" in out
    code, out, err = run_cli("run", tmp_path / "art", "--inputs", tmp_path / "inputs.npz", "--format", "json",
                             capsys=capsys)
    assert code == 0, err
    logits = np.array(json.loads(out)["outputs"]["logits"]["data"])
    assert logits.shape == (4, 10)
    assert (logits.argmax(1) == labels[:4]).all()


def test_compile_option_flag(mlp_path, tmp_path, capsys):
    code, out, err = run_cli("compile", mlp_path, "--precision", "int8", "--option", "int8=dynamic",
                             "--option", "per_channel=true", "--out", tmp_path / "a", "--format", "json",
                             capsys=capsys)
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["recipe"]["name"] == "dynamic" and manifest["recipe"]["per_channel"] is True


@pytest.mark.parametrize("args, message", [
    (["compile", "{model}", "--backend", "tflite", "--out", "{tmp}/a"], "unknown backend 'tflite'"),
    (["compile", "{model}", "--precision", "int2", "--out", "{tmp}/a"], "unknown precision 'int2'"),
    (["compile", "{tmp}/missing.onnx", "--out", "{tmp}/a"], "no such file"),
    (["compile", "{tmp}/garbage.onnx", "--out", "{tmp}/a"], "malformed protobuf"),
    (["compile", "{model}", "--calibration", "{tmp}/wrong.npz", "--precision", "int8", "--out", "{tmp}/a"],
     "no array for input"),
    (["run", "{tmp}/not-an-artifact", "--inputs", "{tmp}/wrong.npz"], "no such file"),
    (["compile", "{model}", "--option", "oops", "--out", "{tmp}/a"], "KEY=VALUE"),
    (["distill", "--workload", "ha-intents", "--teacher", "{tmp}", "--augment", "-1", "--out", "{tmp}/a"],
     "--augment must be 0 or more"),
])
def test_known_errors_are_one_line_and_exit_1(args, message, mlp_path, tmp_path, capsys):
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    np.savez(tmp_path / "wrong.npz", image=np.zeros((2, 3)))
    code, out, err = run_cli(*[a.format(model=mlp_path, tmp=tmp_path) for a in args], capsys=capsys)
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1, "one line, no traceback"
    assert not (tmp_path / "a").exists(), "nothing half-written"


def test_run_refuses_bad_feeds(mlp_path, tmp_path, capsys):
    run_cli("compile", mlp_path, "--out", tmp_path / "art", capsys=capsys)
    np.savez(tmp_path / "nan.npz", x=np.full((2, 32), np.nan, np.float32))
    np.savez(tmp_path / "f64.npz", x=np.zeros((2, 32)))
    code, _, err = run_cli("run", tmp_path / "art", "--inputs", tmp_path / "nan.npz", capsys=capsys)
    assert code == 1 and "NaN" in err
    code, _, err = run_cli("run", tmp_path / "art", "--inputs", tmp_path / "f64.npz", capsys=capsys)
    assert code == 1 and "float64" in err and "astype" in err


def test_tampered_artifact_exit_1(mlp_path, tmp_path, capsys):
    run_cli("compile", mlp_path, "--out", tmp_path / "art", capsys=capsys)
    with open(tmp_path / "art" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 32), np.float32))
    code, _, err = run_cli("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", capsys=capsys)
    assert code == 1 and "modified" in err


def test_doctor_json(capsys):
    code, out, _ = run_cli("doctor", "--format", "json", capsys=capsys)
    report = json.loads(out)
    assert code == 0
    assert set(report["cpu_flags"]) >= {"avx2", "avx512_vnni", "amx", "neon"}
    assert report["software"]["onnxruntime"]
    assert {r["name"] for r in report["backends"]} >= {"onnxruntime", "openvino", "tensorrt"}


def test_entry_point_and_debug_traceback(tmp_path):
    """The installed `edgeagent` script; EDGEAGENT_DEBUG=1 shows the traceback."""
    exe = os.path.join(os.path.dirname(sys.executable), "edgeagent")
    env = {**os.environ, "EDGEAGENT_DEBUG": "1"}
    proc = subprocess.run([exe, "compile", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ModelRejected" in proc.stderr
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "edgeagent" in proc.stdout


def test_export_module_function_spec(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "mymodel.py").write_text(textwrap.dedent('''
        import torch
        def build():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(4, 2)).eval(), (torch.randn(3, 4),)
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_cli("export", "mymodel:build", "--out", tmp_path / "m.onnx", capsys=capsys)
    assert code == 0, err
    assert "parity with PyTorch holds" in out
    code, out, err = run_cli("compile", tmp_path / "m.onnx", "--precision", "int8", "--out", tmp_path / "a",
                             capsys=capsys)
    assert code == 0, err
    code, _, err = run_cli("export", "mymodel:nothing", "--out", tmp_path / "n.onnx", capsys=capsys)
    assert code == 1 and "no callable" in err


def test_the_shipped_examples_export_from_an_installed_package(tmp_path, capsys):
    code, out, _ = run_cli("export", "edgeagent.examples:tiny_classifier", "--out", tmp_path / "c.onnx",
                           "--format", "json", capsys=capsys)
    assert code == 0
    record = json.loads(out)
    assert record["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 32]}]
    assert record["metadata"]["source"] == "edgeagent.examples:tiny_classifier" and len(record["sha256"]) == 64
    assert "built in code" in record["check"]
    if __import__("importlib").util.find_spec("torch"):
        code, out, _ = run_cli("export", "edgeagent.examples:tiny_encoder", "--out", tmp_path / "e.onnx",
                               capsys=capsys)
        assert code == 0 and "parity with PyTorch holds" in out


def test_device_flag_maps_to_the_backend_or_names_the_devices_present(tmp_path, capsys):
    model = models.mlp_classifier(tmp_path / "m.onnx")
    code, out, _ = run_cli("compile", model, "--device", "cpu", "--out", tmp_path / "cpu", "--format", "json",
                           capsys=capsys)
    assert code == 0 and json.loads(out)["recipe"]["device"] == "cpu"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        code, _, err = run_cli("compile", model, "--device", "gpu.1", "--out", tmp_path / "gpu", capsys=capsys)
        assert code == 1 and "CUDAExecutionProvider" in err and "edgeagent[gpu]" in err
        assert not (tmp_path / "gpu").exists()
    code, _, err = run_cli("compile", model, "--device", "tpu..", "--out", tmp_path / "x", capsys=capsys)
    assert code == 1 and "not of the form" in err
    if __import__("edgeagent").get_backend("openvino").available():
        code, _, err = run_cli("compile", model, "--backend", "openvino", "--device", "npu.3",
                               "--out", tmp_path / "npu", capsys=capsys)
        assert code == 1 and "present devices" in err and "CPU" in err


def test_verbosity_routes_the_sdks_own_warnings(mlp_path, tmp_path, capsys):
    # ONNX Runtime's quantizer logs its warnings on the root logger; edgeagent keeps them for -v.
    assert main(["compile", str(mlp_path), "--precision", "int8", "--out", str(tmp_path / "a")]) == 0
    assert "[onnxruntime]" not in capsys.readouterr().err
    assert main(["-v", "compile", str(mlp_path), "--precision", "int8", "--out", str(tmp_path / "b")]) == 0
    assert "[onnxruntime]" in capsys.readouterr().err
    assert main(["-q", "compile", str(mlp_path), "--precision", "int8", "--out", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().err == ""


def test_a_bug_in_edgeagent_exits_3_not_as_a_usage_error(monkeypatch, capsys):
    from edgeagent.cli import backends
    from edgeagent.errors import InternalError

    def broken(args):
        raise InternalError("an invariant broke")

    monkeypatch.setattr(backends, "handle", broken)
    assert main(["backends"]) == 3
    assert "bug in edgeagent" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["no-such-command"])
    assert usage.value.code == 2
