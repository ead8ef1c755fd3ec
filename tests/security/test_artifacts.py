"""Artifact manifests (issue 19, defects 11 and 13): a hostile manifest is an ArtifactError naming what is
wrong, and the CLI says so with exit 1, never "internal error" (exit 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import edgeagent
from edgeagent.artifact import open_artifact
from edgeagent.cli.main import main
from edgeagent.errors import ArtifactError
from tests.security import hostile


@pytest.fixture(scope="module")
def built(mlp_path, tmp_path_factory):
    return edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path_factory.mktemp("a") / "art")


@pytest.fixture
def copy(built, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(built.path, dest)
    return dest


def _set(key, value):
    def change(manifest):
        target = manifest
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return change


def _rename_file(new):
    def change(manifest):
        manifest["files"][new] = manifest["files"].pop("model.onnx")
    return change


HOSTILE = {
    "files is a list": (_set("files", ["model.onnx"]), "no files"),
    "a hash is a number": (lambda m: m["files"].update({"model.onnx": 5}), "64 hex"),
    "backend is a number": (_set("backend", 7), "'backend'"),
    "signature inputs are numbers": (_set("signature.inputs", [1, 2]), "signature"),
    "a shape holds a float": (_set("signature.inputs", [{"name": "x", "dtype": "float32", "shape": [1.5]}]),
                              "shape"),
    "an unknown dtype": (_set("signature.inputs", [{"name": "x", "dtype": "float99", "shape": [1]}]), "float99"),
    "source is a string": (_set("source", "abc"), "'source'"),
    "recipe is a list": (_set("recipe", [1]), "'recipe'"),
    "nested 200,000 deep": (lambda m: json.dumps(m)[:-1] + ', "evidence": ' + hostile.deep_json() + "}", "nests"),
    "a 5,000-digit integer": (lambda m: json.dumps(m)[:-1] + ', "x": ' + hostile.huge_int() + "}", "number"),
    "NaN": (lambda m: json.dumps(m)[:-1] + ', "x": NaN}', "NaN"),
    "a NUL in a file name": (_rename_file("model\x00.onnx"), "file name"),
    "an empty path part": (_rename_file("a//model.onnx"), "file name"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_manifest_is_an_artifact_error(copy, case, tmp_path, capsys):
    change, match = HOSTILE[case]
    hostile.rewrite_manifest(copy, change)
    with pytest.raises(ArtifactError, match=match):
        open_artifact(copy)
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 32), np.float32))
    assert main(["run", str(copy), "--inputs", str(tmp_path / "in.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "internal error" not in err


def test_a_symlinked_manifest_pointing_outside_is_refused(copy, tmp_path):
    """Defect 13: manifest.json as a symlink to a manifest elsewhere was accepted."""
    outside = tmp_path / "elsewhere.json"
    shutil.move(copy / "manifest.json", outside)
    (copy / "manifest.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symlink"):
        open_artifact(copy)


def test_a_listed_file_that_is_a_fifo_is_refused_without_hanging(copy):
    (copy / "model.onnx").unlink()
    import os

    os.mkfifo(copy / "model.onnx")
    with pytest.raises(ArtifactError, match="not a regular file"):
        open_artifact(copy)
