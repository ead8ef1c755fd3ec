"""The backend registry and contract: entry points, unavailable plug-ins, options, precisions."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

import edgeagent
from edgeagent.backend import Precision, backend_entries, get_backend, list_backends, parse_options
from edgeagent.errors import BackendUnavailable, InputError, UnsupportedPrecision


def test_builtins_register_through_entry_points():
    names = {ep.name for ep in importlib.metadata.entry_points(group="edgeagent.backends")}
    assert {"onnxruntime", "openvino", "tensorrt"} <= names
    rows = {r["name"]: r for r in list_backends()}
    assert rows["onnxruntime"]["available"] is True
    assert "CPU" in rows["onnxruntime"]["devices"]
    for name in ("openvino", "tensorrt"):
        assert name in rows
        if not rows[name]["available"]:
            assert rows[name]["reason"]


def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(BackendUnavailable) as info:
        get_backend("tflite")
    assert "onnxruntime" in str(info.value) and "tflite" in str(info.value)


def test_tensorrt_explains_why_it_is_unavailable():
    status = get_backend("tensorrt").available()
    if status:
        pytest.skip("TensorRT and an NVIDIA GPU are present here")
    assert status.reason and status.install_hint


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A real installed-looking distribution on sys.path, registering two backends."""
    (tmp_path / "thirdparty_backend.py").write_text(textwrap.dedent('''
        from edgeagent.backend import Availability, Backend, Capabilities, Precision

        class EchoBackend(Backend):
            name = "echo"
            def capabilities(self):
                return Capabilities("echo", ("CPU",), (Precision.FP32,))
            def available(self):
                return Availability(True)
            def compile(self, ir, precision, **kw):
                raise NotImplementedError
            def load(self, artifact, **kw):
                raise NotImplementedError
    '''))
    dist = tmp_path / "thirdparty_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[edgeagent.backends]\necho = thirdparty_backend:EchoBackend\n"
        "broken = thirdparty_backend_missing:Nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backend_entries.cache_clear()
    yield
    backend_entries.cache_clear()
    sys.modules.pop("thirdparty_backend", None)


def test_third_party_backend_and_broken_plugin(third_party):
    rows = {r["name"]: r for r in list_backends()}
    assert rows["echo"]["available"] is True
    assert rows["broken"]["available"] is False and "ModuleNotFoundError" in rows["broken"]["reason"]
    assert rows["onnxruntime"]["available"] is True, "a broken plug-in does not break the rest"
    with pytest.raises(BackendUnavailable, match="broken"):
        get_backend("broken")


def test_precision_parse():
    assert Precision.parse("INT8") is Precision.INT8
    assert Precision.parse("int4") is Precision.INT4  # weight-only, for decoders
    with pytest.raises(UnsupportedPrecision, match="fp32"):
        Precision.parse("int3")


def test_parse_options_converts_and_validates():
    from edgeagent.backends.onnxruntime import OrtCompileOptions, OrtLoadOptions

    opts = parse_options(OrtCompileOptions, {"per-channel": "true", "int8": "STATIC"})
    assert opts.per_channel is True and opts.int8 == "static"
    assert parse_options(OrtLoadOptions, {"threads": "2"}).threads == 2
    with pytest.raises(InputError, match="boolean"):
        parse_options(OrtCompileOptions, {"per_channel": "maybe"})
    with pytest.raises(InputError, match="unknown option 'threads'"):
        parse_options(OrtCompileOptions, {"threads": "2"})  # a load option never reaches compile


def test_options_split_by_when_they_apply():
    ort, ov = get_backend("onnxruntime"), get_backend("openvino")
    assert ort.split_options({"int8": "dynamic", "threads": "auto", "per_channel": True}) == \
        ({"int8": "dynamic", "per_channel": True}, {"threads": "auto"})
    # A device is chosen at compile time (checked, recorded) and may be overridden at load.
    assert ov.split_options({"device": "CPU", "performance_hint": "latency", "subset_size": 8}) == \
        ({"device": "CPU", "subset_size": 8}, {"device": "CPU", "performance_hint": "latency"})
    with pytest.raises(InputError, match="compile options: .*load options: \\[.*'threads'\\]"):
        ort.split_options({"thread": "2"})


def test_session_closed_refuses_runs(mlp_path, tmp_path):
    import numpy as np

    artifact = edgeagent.compile(mlp_path, out=tmp_path / "a")
    session = edgeagent.load_session(artifact)
    session.close()
    with pytest.raises(edgeagent.errors.EdgeAgentError, match="closed"):
        session.run({"x": np.zeros((1, 32), np.float32)})


def test_symbolic_dims_must_agree(transformer_path, tmp_path):
    """Two inputs sharing a symbol must agree on it (here: one input, checked via a 2-input model)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(tmp_path / "two.onnx"))
    with edgeagent.load_session(edgeagent.compile(tmp_path / "two.onnx", out=tmp_path / "a")) as session:
        with pytest.raises(InputError, match="batch=3") as info:
            session.run({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})
        assert info.value.field == "b"
