"""The backend conformance suite: a template every backend's test module subclasses.

Subclass `BackendConformance`, set `backend_name` (and, where needed, tolerances, precisions or
options), and pytest collects the whole suite for that backend, as NNCF's cross-framework
templates do. Tiny models come from tests/models.py; the fp32 reference is the ONNX reference
evaluator (`onnx.reference`), independent of every backend.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import numpy as np
import pytest

import edgeagent
from edgeagent.artifact import MANIFEST, open_artifact
from edgeagent.errors import ArtifactError, InputError, UnsupportedPrecision
from tests import models


def onnx_reference(path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnx
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(path))
    outputs = ReferenceEvaluator(proto).run(None, feeds)
    return dict(zip([o.name for o in proto.graph.output], outputs))


class BackendConformance:
    """What every backend must do. Subclasses set the class attributes below."""

    backend_name: ClassVar[str]
    fp32_atol: ClassVar[float] = 1e-4
    fp32_rtol: ClassVar[float] = 1e-3
    int8_min_agreement: ClassVar[float] = 0.99
    # The precisions the suite compiles; each must be listed in the backend's capabilities.
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    fp16_atol: ClassVar[float] = 5e-2
    compile_options: ClassVar[dict[str, Any] | None] = None
    load_options: ClassVar[dict[str, Any] | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        backend = edgeagent.get_backend(cls.backend_name)
        status = backend.available()
        if not status:
            pytest.skip(f"{cls.backend_name} unavailable: {status.reason} ({status.install_hint})")
        return backend

    @pytest.fixture(scope="class")
    @classmethod
    def artifacts(cls, backend, tmp_path_factory, mlp_path, mlp_calibration):
        """The MLP compiled at every precision of the suite, once per class."""
        root = tmp_path_factory.mktemp(f"artifacts-{cls.backend_name}")
        return {p: edgeagent.compile(mlp_path, cls.backend_name, p, out=root / p, options=cls.compile_options,
                                     calibration=mlp_calibration if p == "int8" else None)
                for p in cls.precisions}

    def _session(self, artifact):
        return edgeagent.load_session(artifact, options=self.load_options)

    # -- contract ------------------------------------------------------------------------------

    def test_capabilities_are_frozen_and_complete(self, backend):
        caps = backend.capabilities()
        assert caps.name == self.backend_name
        assert caps.devices, "an available backend lists at least one device"
        for precision in self.precisions:
            assert precision in caps.precisions
        with pytest.raises(dataclasses.FrozenInstanceError):
            caps.devices = ()
        assert json.dumps(caps.to_json())

    def test_listed_as_available(self, backend):
        rows = {r["name"]: r for r in edgeagent.list_backends()}
        assert rows[self.backend_name]["available"] is True
        assert rows[self.backend_name]["version"]

    @pytest.mark.parametrize("model", ["mlp", "conv", "transformer"])
    def test_fp32_parity_with_onnx_reference(self, backend, model, request, tmp_path):
        path = request.getfixturevalue(f"{model}_path")
        ir = edgeagent.load(path)
        feeds = models.random_feeds(ir, batch=3, sequence=9)
        artifact = edgeagent.compile(ir, self.backend_name, "fp32", out=tmp_path / "a", options=self.compile_options)
        with self._session(artifact) as session:
            got = session.run(feeds)
        expected = onnx_reference(path, feeds)
        assert set(got) == set(expected)
        for name, ref in expected.items():
            assert got[name].shape == ref.shape
            np.testing.assert_allclose(got[name], ref, atol=self.fp32_atol, rtol=self.fp32_rtol)

    def test_int8_top1_agreement_with_fp32(self, artifacts, mlp_eval):
        if "int8" not in self.precisions:
            pytest.skip(f"{self.backend_name} has no int8 in this suite")
        x, labels = mlp_eval
        with self._session(artifacts["fp32"]) as fp32, self._session(artifacts["int8"]) as int8:
            ref = fp32.run({"x": x})["logits"]
            got = int8.run({"x": x})["logits"]
        agreement = float((ref.argmax(1) == got.argmax(1)).mean())
        assert agreement >= self.int8_min_agreement, f"int8 top-1 agreement {agreement:.4f}"
        assert float((got.argmax(1) == labels).mean()) >= 0.97
        assert artifacts["int8"].precision == "int8"

    def test_fp16_close_to_fp32(self, artifacts, mlp_eval):
        if "fp16" not in self.precisions:
            pytest.skip(f"{self.backend_name} has no fp16 in this suite")
        x, _ = mlp_eval
        with self._session(artifacts["fp32"]) as fp32, self._session(artifacts["fp16"]) as fp16:
            ref = fp32.run({"x": x})["logits"]
            got = fp16.run({"x": x})["logits"]
        assert got.dtype == np.float32  # inputs and outputs keep the IR's types
        np.testing.assert_allclose(got, ref, atol=self.fp16_atol, rtol=1e-2)

    @pytest.mark.parametrize("batch", [1, 3, 17])
    def test_dynamic_batch(self, artifacts, mlp_path, batch):
        x, _ = models.blobs(batch, seed=batch)
        with self._session(artifacts["fp32"]) as session:
            out = session.run({"x": x})["logits"]
        assert out.shape == (batch, models.MLP_CLASSES)
        np.testing.assert_allclose(out, onnx_reference(mlp_path, {"x": x})["logits"],
                                   atol=self.fp32_atol, rtol=self.fp32_rtol)

    def test_dynamic_sequence(self, backend, transformer_path, tmp_path):
        artifact = edgeagent.compile(transformer_path, self.backend_name, "fp32", out=tmp_path / "a",
                                     options=self.compile_options)
        with self._session(artifact) as session:
            for batch, sequence in [(1, 3), (2, 12), (4, 31)]:
                feeds = models.random_feeds(edgeagent.load(transformer_path), batch=batch, sequence=sequence)
                out = session.run(feeds)["logits"]
                assert out.shape == (batch, 5)
                np.testing.assert_allclose(out, onnx_reference(transformer_path, feeds)["logits"],
                                           atol=self.fp32_atol, rtol=self.fp32_rtol)

    @pytest.mark.parametrize("case, feeds, field", [
        ("missing", {}, "x"),
        ("unknown", {"x": np.zeros((1, 32), np.float32), "y": np.zeros(1, np.float32)}, "y"),
        ("dtype", {"x": np.zeros((1, 32), np.float64)}, "x"),
        ("rank", {"x": np.zeros((32,), np.float32)}, "x"),
        ("fixed_dim", {"x": np.zeros((1, 31), np.float32)}, "x"),
        ("nan", {"x": np.full((2, 32), np.nan, np.float32)}, "x"),
        ("inf", {"x": np.array([[np.inf] * 32], np.float32)}, "x"),
        ("not_array", {"x": [[0.0] * 32]}, "x"),
    ])
    def test_bad_inputs_refused(self, artifacts, case, feeds, field):
        with self._session(artifacts["fp32"]) as session:
            with pytest.raises(InputError) as info:
                session.run(feeds)
            assert info.value.field == field
            assert field in str(info.value)
            # The session still works after refusing bad input.
            assert session.run({"x": np.zeros((1, 32), np.float32)})["logits"].shape == (1, 10)

    def test_unknown_precision_refused(self, backend, mlp_path, tmp_path):
        with pytest.raises(UnsupportedPrecision, match="int3"):
            edgeagent.compile(mlp_path, self.backend_name, "int3", out=tmp_path / "a")
        assert not (tmp_path / "a").exists()

    def test_manifest_records_the_build(self, artifacts, mlp_path):
        source = edgeagent.load(mlp_path)
        for precision, artifact in artifacts.items():
            manifest = json.loads((artifact.path / MANIFEST).read_text())
            assert manifest["backend"] == self.backend_name
            assert manifest["precision"] == precision
            assert manifest["source"]["sha256"] == source.sha256
            assert manifest["recipe"]["name"]
            assert manifest["sdk"] and all(manifest["sdk"].values())
            assert manifest["signature"]["inputs"][0]["name"] == "x"
            assert manifest["files"], "every file is listed with its sha256"
            assert all(len(h) == 64 for h in manifest["files"].values())

    def test_tampered_artifact_refused(self, artifacts, tmp_path):
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(artifacts["fp32"].path, copy)
        open_artifact(copy)  # an untouched copy verifies
        victim = sorted(open_artifact(copy).manifest["files"])[0]
        with open(copy / victim, "r+b") as fh:
            fh.seek(-1, 2)
            last = fh.read(1)
            fh.seek(-1, 2)
            fh.write(bytes([last[0] ^ 0xFF]))
        with pytest.raises(ArtifactError, match="modified"):
            edgeagent.load_session(copy)
