"""tensorrt: the GPU conformance suite (marker `tensorrt`), and on CPU everything that needs no GPU.

On CPU: the QDQ graph edgeagent prepares for TensorRT (run in ONNX Runtime against fp32), the
optimization profiles, engine identities and the engine cache, the per-layer and error reports,
the workspace taken from the target, and the reason the backend gives when it is unavailable.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import edgeagent
from edgeagent.backends.tensorrt import (INSTALL_HINT, TrtCompileOptions, build_flags, nvidia_gpus,
                                         resolve_workspace)
from edgeagent.backends.tensorrt.cache import PLAN_FILE, EngineCache, EngineIdentity, mismatches
from edgeagent.backends.tensorrt.profiles import ShapeRange, compute_profile, parse_shapes
from edgeagent.backends.tensorrt.qdq import check_trt_qdq, prepare_qdq
from edgeagent.backends.tensorrt.report import (build_error_message, layer_report, onnx_nodes_in,
                                                parser_error_message, tensor_precision)
from edgeagent.cli.main import main
from edgeagent.errors import BackendUnavailable, CalibrationError, InputError, UnsupportedModel
from edgeagent.ir import TensorSpec
from edgeagent.targets import get_target
from tests import models
from tests.backends.conformance import BackendConformance


@pytest.mark.tensorrt
class TestTensorRTConformance(BackendConformance):
    """Runs where TensorRT and an NVIDIA GPU are present; skipped with the reason elsewhere."""

    backend_name = "tensorrt"
    compile_options = {"max_batch": 32}  # the suite runs batches up to 17
    fp32_atol = 1e-3


TRT_USABLE = bool(edgeagent.get_backend("tensorrt").available())


# -- availability ------------------------------------------------------------------------------

@pytest.mark.skipif(TRT_USABLE, reason="TensorRT and a GPU are present here")
def test_backends_command_explains_why_tensorrt_is_unavailable(capsys):
    assert main(["backends", "--format", "json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "tensorrt")
    assert row["available"] is False
    assert "tensorrt" in row["reason"] or "GPU" in row["reason"] or "cuda" in row["reason"]
    assert row["install_hint"] and row["precisions"] == ["fp32", "fp16", "int8", "int4"]


@pytest.mark.skipif(TRT_USABLE, reason="TensorRT and a GPU are present here")
def test_compile_refuses_with_the_reason_and_writes_nothing(mlp_path, tmp_path):
    with pytest.raises(BackendUnavailable, match="tensorrt") as info:
        edgeagent.compile(mlp_path, "tensorrt", "fp32", out=tmp_path / "engine")
    assert "unavailable" in str(info.value)
    assert not (tmp_path / "engine").exists()
    assert INSTALL_HINT.startswith("pip install")
    assert isinstance(nvidia_gpus(), list)


# -- the QDQ graph, checked in ONNX Runtime on CPU ---------------------------------------------------

@pytest.fixture(scope="module")
def mlp_qdq(mlp_path, mlp_calibration):
    return prepare_qdq(edgeagent.load(mlp_path), mlp_calibration)


def test_qdq_graph_agrees_with_fp32_on_the_conformance_classifier(mlp_path, mlp_qdq, mlp_eval):
    model, summary = mlp_qdq
    x, labels = mlp_eval
    fp32 = ort.InferenceSession(str(mlp_path)).run(None, {"x": x})[0]
    int8 = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    agreement = float((fp32.argmax(1) == int8.argmax(1)).mean())
    assert agreement >= 0.99, f"int8 top-1 agreement {agreement:.4f}"
    assert float((int8.argmax(1) == labels).mean()) >= 0.97
    assert summary["quantized_ops"] == {"MatMul": 2} and summary["calibration_samples"] == 128


def test_qdq_graph_follows_tensorrt_rules(mlp_qdq):
    model, summary = mlp_qdq
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and summary["quantize_nodes"] + summary["dequantize_nodes"] == len(qdq)
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()  # symmetric INT8
    weights = [n for n in qdq if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
               and inits[n.input[0]].dtype == np.int8]
    assert len(weights) == 2 == summary["per_channel_weights"]
    for node in weights:
        values, scale = inits[node.input[0]], inits[node.input[1]]
        assert values.min() >= -127 and values.max() <= 127  # TensorRT's weight range
        assert scale.shape == (values.shape[1],)  # one scale per output channel of MatMul's [K, N]
    activations = [n for n in qdq if n.op_type == "QuantizeLinear"]
    assert all(inits[n.input[1]].size == 1 for n in activations)  # per tensor
    # Only the inputs of the linear ops are quantized; their outputs stay float for TensorRT to fuse.
    matmul_outputs = {o for n in model.graph.node if n.op_type == "MatMul" for o in n.output}
    assert not any(n.input[0] in matmul_outputs for n in activations)


@pytest.mark.parametrize("model_name", ["conv", "transformer"])
def test_qdq_graph_of_conv_and_transformer_models_runs_and_agrees(model_name, request):
    path = request.getfixturevalue(f"{model_name}_path")
    ir = edgeagent.load(path)
    calibration = edgeagent.Dataset([models.random_feeds(ir, batch=1, sequence=12, seed=i) for i in range(48)])
    model, summary = prepare_qdq(ir, calibration)
    assert summary["per_channel_weights"] >= 1 and summary["quantized_ops"]
    fp32, int8 = ort.InferenceSession(str(path)), ort.InferenceSession(model.SerializeToString())
    agree = []
    for seed in range(100, 160):
        feeds = models.random_feeds(ir, batch=2, sequence=12, seed=seed)
        a, b = fp32.run(None, feeds)[0], int8.run(None, feeds)[0]
        agree.extend((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).tolist())
    assert np.mean(agree) >= 0.95


def test_qdq_needs_calibration_samples(mlp_path):
    ir = edgeagent.load(mlp_path)
    with pytest.raises(CalibrationError, match="calibration data"):
        prepare_qdq(ir, None)
    with pytest.raises(CalibrationError, match="no samples"):
        prepare_qdq(ir, edgeagent.Dataset([]))
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        prepare_qdq(ir, edgeagent.Dataset([{"x": np.zeros((1, 32), np.float32)}]), method="magic")


def test_a_graph_tensorrt_would_refuse_is_named(mlp_path, mlp_calibration, tmp_path):
    """onnxruntime's default static recipe (asymmetric UINT8 activations) breaks TensorRT's rules."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgeagent.backends.onnxruntime import calibration_reader

    dest = tmp_path / "u8.onnx"
    quantize_static(str(mlp_path), str(dest), calibration_reader(mlp_calibration.subset(32), ["x"]),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8)
    with pytest.raises(UnsupportedModel, match="zero point") as info:
        check_trt_qdq(onnx.load(str(dest)))
    assert "QuantizeLinear" in str(info.value) or "DequantizeLinear" in str(info.value)
    custom = onnx.load(str(mlp_path))
    custom.graph.node[0].domain = "com.microsoft"
    with pytest.raises(UnsupportedModel, match="standard operators"):
        check_trt_qdq(custom)


# -- optimization profiles -------------------------------------------------------------------------

TEXT_INPUTS = (TensorSpec("input_ids", "int64", ("batch", "sequence")),
               TensorSpec("attention_mask", "int64", ("batch", "sequence")))


def test_profile_from_real_shapes_shares_symbolic_dims():
    samples = [{"input_ids": np.zeros((1, n)), "attention_mask": np.zeros((1, n))} for n in (5, 9, 12, 30, 14)]
    profile, sources = compute_profile(TEXT_INPUTS, samples=samples, max_batch=8)
    assert profile["input_ids"] == profile["attention_mask"] == ShapeRange((1, 5), (1, 12), (8, 30))
    assert sources == {"input_ids[0]": "samples", "input_ids[1]": "samples",
                       "attention_mask[0]": "samples", "attention_mask[1]": "samples"}


def test_profile_explicit_shapes_win_and_defaults_fill_the_rest():
    inputs = (TensorSpec("x", "float32", ("n", 32)), TensorSpec("y", "float32", ("?", "k")))
    profile, sources = compute_profile(inputs, shapes={"x": ((2, 32), (4, 32), (16, 32))}, max_batch=4,
                                       default_dim=64)
    assert profile["x"] == ShapeRange((2, 32), (4, 32), (16, 32))
    assert profile["y"] == ShapeRange((1, 1), (1, 16), (4, 64))
    assert sources["x[1]"] == "fixed" and sources["x[0]"] == "explicit" and sources["y[1]"] == "default"
    assert profile["x"].contains((3, 32)) and not profile["x"].contains((17, 32))


@pytest.mark.parametrize("shapes, samples, match", [
    ({"z": ((1,), (1,), (1,))}, None, "not an input"),
    ({"input_ids": ((1, 1), (1, 8))}, None, "three shapes"),
    ({"input_ids": ((1, 1), (1, 64), (8, 32))}, None, "min <= opt <= max"),
    ({"input_ids": ((1, 1), (1, 8), (8, 32)), "attention_mask": ((1, 1), (1, 16), (8, 32))}, None, "disagree"),
    (None, [{"input_ids": np.zeros(3)}], "rank"),
])
def test_profile_errors_name_the_problem(shapes, samples, match):
    with pytest.raises(InputError, match=match):
        compute_profile(TEXT_INPUTS, shapes=shapes, samples=samples)


def test_profile_refuses_a_range_over_a_fixed_dimension():
    with pytest.raises(InputError, match="fixes it at 32"):
        compute_profile((TensorSpec("x", "float32", ("n", 32)),), shapes={"x": ((1, 16), (1, 32), (1, 32))})
    with pytest.raises(InputError, match="fixes 32"):
        compute_profile((TensorSpec("x", "float32", ("n", 32)),), samples=[{"x": np.zeros((1, 31))}])


def test_shapes_parse_from_the_cli_form():
    assert parse_shapes("input_ids:1x1,1x32,8x128; attention_mask:1x1,1x32,8x128") == {
        "input_ids": ((1, 1), (1, 32), (8, 128)), "attention_mask": ((1, 1), (1, 32), (8, 128))}
    options = TrtCompileOptions(shapes="x:1x32,4x32,16x32")
    assert options.shapes == {"x": ((1, 32), (4, 32), (16, 32))}
    for bad in ("input_ids:1x1,1x32", "input_ids 1x1,1x2,1x3", "x:1xa,1x2,1x3"):
        with pytest.raises(InputError, match="shapes"):
            parse_shapes(bad)


def test_options_validate_their_values():
    assert TrtCompileOptions(int8="entropy").int8 == "entropy"
    with pytest.raises(InputError, match="int8"):
        TrtCompileOptions(int8="fp4")
    with pytest.raises(InputError, match="builder_optimization_level"):
        TrtCompileOptions(builder_optimization_level=9)
    with pytest.raises(InputError, match="max_batch"):
        TrtCompileOptions(max_batch=0)
    assert edgeagent.get_backend("tensorrt").compile_options({"workspace_mb": "512", "nodes_to_exclude": "a,b"}) == \
        TrtCompileOptions(workspace_mb=512, nodes_to_exclude=("a", "b"))


# -- engine identity and cache -----------------------------------------------------------------------

def identity(**changes) -> EngineIdentity:
    fields = dict(ir_sha256="a" * 64, tensorrt="10.13.0", gpu="NVIDIA L4", compute_capability="8.9",
                  precision="int8", flags={"recipe": "qdq", "workspace_bytes": 1 << 30})
    fields.update(changes)
    return EngineIdentity(**fields)


@pytest.mark.parametrize("change", [
    {"ir_sha256": "b" * 64}, {"tensorrt": "10.14.1"}, {"gpu": "Orin"}, {"compute_capability": "8.7"},
    {"precision": "fp16"}, {"flags": {"recipe": "qdq", "workspace_bytes": 2 << 30}},
])
def test_every_identity_field_changes_the_key(change):
    base, other = identity(), identity(**change)
    assert base.key != other.key and len(base.key) == 64
    reasons = mismatches(base.to_json(), other)
    assert len(reasons) == 1
    assert identity().key == base.key  # deterministic
    assert EngineIdentity.from_json(json.loads(json.dumps(base.to_json()))).key == base.key


def test_mismatch_reasons_read_as_a_message():
    reasons = mismatches(identity().to_json(), identity(tensorrt="11.0.0", gpu="NVIDIA H100"))
    assert reasons == ["TensorRT version '10.13.0' != '11.0.0'", "GPU 'NVIDIA L4' != 'NVIDIA H100'"]
    flags = mismatches(identity().to_json(), identity(flags={"recipe": "entropy", "workspace_bytes": 1 << 30}))
    assert flags == ["build flags differ (recipe)"]


def test_build_flags_hold_the_profile_workspace_and_graph():
    profile = {"x": ShapeRange((1, 32), (4, 32), (8, 32))}
    from edgeagent.backend import Precision

    flags = build_flags(Precision.INT8, TrtCompileOptions(), profile, 1 << 30, "c" * 64)
    assert flags["recipe"] == "qdq" and flags["strongly_typed"] is True and flags["tf32"] is False
    assert flags["profile"] == {"x": {"min": [1, 32], "opt": [4, 32], "max": [8, 32]}}
    entropy = build_flags(Precision.INT8, TrtCompileOptions(int8="entropy"), profile, None, "c" * 64)
    assert entropy["strongly_typed"] is False
    assert identity(flags=flags).key != identity(flags=entropy).key


def test_engine_cache_returns_only_verified_entries(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    wanted = identity()
    assert cache.get(wanted) is None
    entry = cache.put(wanted, b"plan bytes", {"timing.cache": b"timing", "calibration.cache": b"scales"})
    assert cache.get(wanted) == entry and (entry / PLAN_FILE).read_bytes() == b"plan bytes"
    assert cache.built_with(entry) == {"calibration.cache": b"scales", "timing.cache": b"timing"}
    with pytest.raises(ValueError, match="plain name"):
        cache.put(wanted, b"plan", {"../escape": b"x"})
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".staging")]
    assert cache.get(identity(gpu="Orin")) is None  # another GPU's key is another entry
    (entry / PLAN_FILE).write_bytes(b"swapped plan")  # a changed plan is never returned...
    assert cache.get(wanted) is None and not entry.exists()  # ...and is removed, to be rebuilt
    entry = cache.put(wanted, b"plan bytes")
    record = json.loads((entry / "identity.json").read_text())
    record["identity"]["tensorrt"] = "9.0"  # a record that no longer matches its folder
    (entry / "identity.json").write_text(json.dumps(record))
    assert cache.get(wanted) is None


def test_engine_cache_defaults_under_edgeagent_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAGENT_HOME", str(tmp_path))
    assert EngineCache().root == tmp_path / "tensorrt" / "engines"


# -- workspace from the target ------------------------------------------------------------------------

def test_workspace_comes_from_option_target_preset_or_memory_limit():
    jetson = get_target("jetson-orin-nano")
    assert resolve_workspace(TrtCompileOptions(workspace_mb=256), jetson) == (256 << 20, "option workspace_mb")
    size, source = resolve_workspace(TrtCompileOptions(), jetson)
    assert size == 1024 << 20 and "preset" in source
    rpi = get_target("rpi5")
    size, source = resolve_workspace(TrtCompileOptions(), rpi)
    assert size == rpi.memory_limit_bytes // 2 and "memory_limit" in source
    assert resolve_workspace(TrtCompileOptions(), None) == (None, "TensorRT's default (the device's memory)")


# -- reports ------------------------------------------------------------------------------------

# The shape of IEngineInspector.get_engine_information(LayerInformationFormat.JSON) at
# ProfilingVerbosity.DETAILED, as TensorRT's documentation shows it.
INSPECTOR_JSON = json.dumps({"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0 to /l0/MatMul", "LayerType": "Reformat",
     "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Name": "x'", "Format/Datatype": "Row major linear Int8"}]},
    {"Name": "/l0/MatMul + /l0/Add + /l0/Relu", "LayerType": "CaskGemm",
     "Inputs": [{"Name": "x'", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
     "Outputs": [{"Name": "h", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}]},
    {"Name": "/l1/MatMul", "LayerType": "CaskGemm",
     "Inputs": [{"Name": "h", "Format/Datatype": "Row major linear Int8"}],
     "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32"}]},
    {"Name": "/l1/Softmax", "LayerType": "Softmax",
     "Inputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP16 format"}],
     "Outputs": [{"Name": "probs", "Format/Datatype": "Row major linear FP16 format"}]},
], "Bindings": ["x", "probs"]})


def test_layer_report_gives_each_layers_precision_and_onnx_nodes():
    report = layer_report(INSPECTOR_JSON, ["/l0/MatMul", "/l0/Add", "/l0/Relu", "/l1/MatMul", "/l1/Softmax"])
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["/l0/MatMul + /l0/Add + /l0/Relu"]["precision"] == "INT8"
    assert rows["/l0/MatMul + /l0/Add + /l0/Relu"]["onnx_nodes"] == ["/l0/MatMul", "/l0/Add", "/l0/Relu"]
    assert rows["/l1/MatMul"]["precision"] == "MIXED[FP32,INT8]"
    assert report["precisions"] == {"FP16": 1, "INT8": 1, "MIXED[FP32,INT8]": 1}  # the reformat is not counted
    names_only = layer_report({"Layers": ["/l0/MatMul + /l0/Add"]}, ["/l0/MatMul", "/l0/Add"])
    assert names_only["layers"][0]["precision"] == "unknown"


def test_tensor_formats_map_to_precisions():
    assert tensor_precision("Row major linear FP16 format") == "FP16"
    assert tensor_precision("Channel major FP32 format where channel % 4 == 0") == "FP32"
    assert tensor_precision("Float") == "FP32" and tensor_precision("Half") == "FP16"
    assert tensor_precision("N/A due to dynamic shapes") is None


def test_layer_names_map_back_to_whole_onnx_node_names():
    nodes = ["/enc/MatMul", "/enc/MatMul_1", "/enc/Add", "/enc/Gelu"]
    assert onnx_nodes_in("PWN(/enc/Add, /enc/Gelu)", nodes) == ["/enc/Add", "/enc/Gelu"]
    assert onnx_nodes_in("/enc/MatMul_1", nodes) == ["/enc/MatMul_1"]  # not /enc/MatMul
    assert onnx_nodes_in("{ForeignNode[/enc/MatMul.../enc/Gelu]}", nodes) == ["/enc/MatMul", "/enc/Gelu"]


def test_parser_and_builder_errors_name_the_onnx_node():
    message = parser_error_message([{"node": 7, "node_name": "/enc/attn/Einsum", "node_operator": "Einsum",
                                     "desc": "unsupported equation"}])
    assert "node 7 '/enc/attn/Einsum' (op Einsum): unsupported equation" in message
    built = build_error_message(["Error Code 4: Internal Error (/enc/MatMul_1: could not find any implementation)"],
                                ["/enc/MatMul", "/enc/MatMul_1"])
    assert "[ONNX node: /enc/MatMul_1]" in built and built.startswith("TensorRT could not build")


# -- GPU only: engines, their cache and identity, the runner -------------------------------------------

gpu = pytest.mark.skipif(not TRT_USABLE, reason="needs TensorRT and an NVIDIA GPU: "
                         + edgeagent.get_backend("tensorrt").available().reason)


@pytest.fixture
def trt_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAGENT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.tensorrt
@gpu
def test_int8_engine_runs_int8_layers_and_reports_device_timings(mlp_path, mlp_calibration, mlp_eval, tmp_path,
                                                                 trt_home):
    artifact = edgeagent.compile(mlp_path, "tensorrt", "int8", calibration=mlp_calibration, out=tmp_path / "a")
    assert "INT8" in json.dumps(artifact.manifest["tensorrt"]["layer_precisions"])
    x, _ = mlp_eval
    with edgeagent.load_session(artifact) as session:
        for _ in range(20):
            session.run({"x": x[:8]})
        timings = session.device_timings()
    assert timings["compute_ms"]["p50"] <= timings["with_copies_ms"]["p50"]
    layers = json.loads((artifact.path / "layers.json").read_text())
    assert any(r["onnx_nodes"] for r in layers["layers"])


@pytest.mark.tensorrt
@gpu
def test_a_second_compile_reuses_the_cached_engine(mlp_path, tmp_path, trt_home):
    first = edgeagent.compile(mlp_path, "tensorrt", "fp32", out=tmp_path / "a")
    second = edgeagent.compile(mlp_path, "tensorrt", "fp32", out=tmp_path / "b")
    assert first.manifest["evidence"]["engine_from_cache"] is False
    assert second.manifest["evidence"]["engine_from_cache"] is True
    assert first.manifest["files"]["engine.plan"] == second.manifest["files"]["engine.plan"]


@pytest.mark.tensorrt
@gpu
def test_an_engine_for_another_tensorrt_is_rebuilt_not_loaded(mlp_path, mlp_eval, tmp_path, trt_home, caplog):
    artifact = edgeagent.compile(mlp_path, "tensorrt", "fp32", out=tmp_path / "a")
    manifest_path = artifact.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tensorrt"]["identity"]["tensorrt"] = "0.0.1"  # as if built by another TensorRT
    manifest_path.write_text(json.dumps(manifest))
    x, _ = mlp_eval
    with caplog.at_level("WARNING", logger="edgeagent.tensorrt"):
        with edgeagent.load_session(artifact.path) as session:
            assert "TensorRT version '0.0.1'" in session.rebuilt_reason
            assert session.run({"x": x[:4]})["logits"].shape == (4, models.MLP_CLASSES)
    assert "rebuilding" in caplog.text


@pytest.mark.tensorrt
@gpu
def test_a_node_tensorrt_cannot_parse_is_named(tmp_path, trt_home):
    from onnx import TensorProto, helper

    node = helper.make_node("Unique", ["x"], ["y"], name="the_unique_node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    path = tmp_path / "unique.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedModel, match="the_unique_node"):
        edgeagent.compile(path, "tensorrt", "fp32", out=tmp_path / "a")

