"""Artifacts: hashes verified on load, atomic builds, and every tampering case refused."""

from __future__ import annotations

import json
import shutil

import pytest

import edgeagent
from edgeagent.artifact import MANIFEST, build_atomically, open_artifact
from edgeagent.errors import ArtifactError, CalibrationError


@pytest.fixture(scope="module")
def built(mlp_path, tmp_path_factory):
    return edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path_factory.mktemp("a") / "art")


@pytest.fixture
def copy(built, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(built.path, dest)
    return dest


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text())


def _write(folder, manifest):
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_untouched_copy_verifies(copy):
    artifact = open_artifact(copy)
    assert artifact.backend == "onnxruntime" and artifact.size_bytes > 0
    assert artifact.inputs[0].name == "x"


def test_removed_file_refused(copy):
    (copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        open_artifact(copy)


def test_swapped_file_refused(copy, trivial_path):
    shutil.copy(trivial_path, copy / "model.onnx")
    with pytest.raises(ArtifactError, match="modified"):
        edgeagent.load_session(copy)


@pytest.mark.parametrize("name", ["../escape.onnx", "/etc/passwd", "a\\..\\b"])
def test_manifest_paths_leaving_the_folder_refused(copy, name):
    manifest = _manifest(copy)
    manifest["files"][name] = "0" * 64
    _write(copy, manifest)
    with pytest.raises(ArtifactError, match="leaves the folder"):
        open_artifact(copy)


def test_symlinked_file_refused(copy, tmp_path):
    real = tmp_path / "real.onnx"
    shutil.move(copy / "model.onnx", real)
    (copy / "model.onnx").symlink_to(real)
    with pytest.raises(ArtifactError, match="symlink"):
        open_artifact(copy)


@pytest.mark.parametrize("content, match", [
    ("{not json", "does not parse"),
    (json.dumps({"schema": "edgeagent.artifact/99"}), "schema"),
    (json.dumps([1, 2]), "schema"),
])
def test_bad_manifest_refused(copy, content, match):
    (copy / MANIFEST).write_text(content)
    with pytest.raises(ArtifactError, match=match):
        open_artifact(copy)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not a folder"):
        open_artifact(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="manifest.json"):
        open_artifact(tmp_path)


def test_failed_build_leaves_nothing(mlp_path, tmp_path):
    with pytest.raises(CalibrationError):
        edgeagent.compile(mlp_path, "onnxruntime", "int8", options={"int8": "static"}, out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_keeps_the_old_artifact(built, tmp_path, mlp_path):
    dest = tmp_path / "art"
    shutil.copytree(built.path, dest)
    before = _manifest(dest)
    with pytest.raises(CalibrationError):
        edgeagent.compile(mlp_path, "onnxruntime", "int8", options={"int8": "static"}, out=dest)
    assert _manifest(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_rebuild_replaces_an_artifact(built, tmp_path, mlp_path):
    dest = tmp_path / "art"
    shutil.copytree(built.path, dest)
    new = edgeagent.compile(mlp_path, "onnxruntime", "int8", out=dest)
    assert open_artifact(dest).precision == "int8" == new.precision
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_output_that_is_not_an_artifact_is_refused(tmp_path, mlp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not empty"):
        edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "out")
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_build_atomically_cleans_up_on_any_error(tmp_path):
    def explode(staging):
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_atomically(tmp_path / "out", explode)
    assert list(tmp_path.iterdir()) == []
