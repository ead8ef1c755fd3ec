"""Fuzz targets (issue 19, "Also"): `edgeagent.load`, the manifest reader and the JSON reader every
manifest and request goes through. Whatever the input, they answer or raise their typed error, never
anything else. The default run is bounded (a few dozen examples each, with a deadline); the long
run is `pytest -m slow tests/security/test_fuzz.py`."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import edgeagent
from edgeagent import safeio
from edgeagent.artifact import open_artifact
from edgeagent.errors import ArtifactError, InputError, ModelRejected
from tests.security import hostile

FAST = settings(max_examples=40, deadline=timedelta(seconds=3), suppress_health_check=[HealthCheck.too_slow],
                database=None)
LONG = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16)
locations = st.one_of(
    st.sampled_from(["w.bin", "./w.bin", "sub/w.bin", "../w.bin", "/etc/passwd", "sub\\w.bin", "C:w.bin",
                     "w.bin\x00", "", ".", "sub//w.bin", "link/w.bin", "hard.bin", "fifo.bin"]),
    st.text(alphabet=st.sampled_from(list("ab./\\:\x00 ")), max_size=12))
numbers = st.one_of(st.integers(-10, 10**6).map(str), st.text(max_size=6), st.just("9" * 5000))


def _base_model() -> bytes:
    folder = Path(tempfile.mkdtemp())
    try:
        return hostile.matmul_model(folder, write_data=False).read_bytes()
    finally:
        shutil.rmtree(folder)


BASE_MODEL = _base_model()


def _folder() -> Path:
    """A scratch model folder holding the files locations may name: a data file, a symlink to one
    outside, a hardlink, a FIFO and a subfolder."""
    import os

    root = Path(tempfile.mkdtemp(prefix="edgeagent-fuzz-"))
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    outside = root / "w.bin"
    outside.write_bytes(hostile.W.tobytes())
    for name in ("w.bin", "sub/w.bin", "sub\\w.bin"):
        (folder / name).write_bytes(hostile.W.tobytes())
    os.symlink(root, folder / "link")
    os.link(outside, folder / "hard.bin")
    os.mkfifo(folder / "fifo.bin")
    return folder


def _load_answers_or_refuses(folder: Path, data: bytes) -> None:
    path = folder / "model.onnx"
    path.write_bytes(data)
    try:
        ir = edgeagent.load(path, full_check=False)
    except ModelRejected:
        return
    for name in ir.external_files:  # what was accepted is inside the folder and a plain file
        target = folder / name
        assert target.resolve().is_relative_to(folder.resolve()) and not target.is_symlink()
        assert target.is_file() and target.stat().st_nlink == 1 and "\\" not in name


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buffer = bytearray(data)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


def _external(location: str, offset: str | None, length: str | None) -> bytes:
    proto = onnx.ModelProto.FromString(BASE_MODEL)
    tensor = proto.graph.initializer[0]
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            tensor.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
    return proto.SerializeToString()


def _load_target(kind, payload) -> None:
    folder = _folder()
    try:
        if kind == "bytes":
            data = payload
        elif kind == "mutated":
            data = _mutate(BASE_MODEL, *payload)
        else:
            data = _external(*payload)
        _load_answers_or_refuses(folder, data)
    finally:
        shutil.rmtree(folder.parent)


load_inputs = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=512)),
    st.tuples(st.just("mutated"), st.tuples(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                     max_size=8), st.none() | st.integers(0, len(BASE_MODEL)))),
    st.tuples(st.just("external"), st.tuples(locations, st.none() | numbers, st.none() | numbers)))


@FAST
@given(load_inputs)
@example(("mutated", ([(169, 128)], None)))  # found by the long run: a location that is not UTF-8 came back as bytes
def test_fuzz_load(case):
    _load_target(*case)


@pytest.mark.slow
@LONG
@given(load_inputs)
def test_fuzz_load_long(case):
    _load_target(*case)


@pytest.fixture(scope="module")
def artifact(mlp_path, tmp_path_factory):
    return edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path_factory.mktemp("fuzz") / "art")


MANIFEST_KEYS = ["schema", "backend", "precision", "files", "signature", "recipe", "source", "capabilities", "sdk",
                 "evidence"]
manifest_changes = st.one_of(
    st.tuples(st.just("fields"), st.dictionaries(st.sampled_from(MANIFEST_KEYS), json_values, max_size=3)),
    st.tuples(st.just("files"), st.dictionaries(st.text(max_size=12), json_values | st.just("0" * 64), max_size=3)),
    st.tuples(st.just("signature"), st.lists(st.dictionaries(st.sampled_from(["name", "dtype", "shape"]),
                                                             json_values, max_size=3), max_size=3)),
    st.tuples(st.just("text"), st.tuples(st.integers(0, 10**5), st.text(max_size=30))))


def _manifest_target(folder: Path, change) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="edgeagent-fuzz-"))
    try:
        copy = scratch / "art"
        shutil.copytree(folder, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        kind, value = change
        if kind == "fields":
            manifest.update(value)
            text = json.dumps(manifest)
        elif kind == "files":
            manifest["files"].update(value)
            text = json.dumps(manifest)
        elif kind == "signature":
            manifest["signature"]["inputs"] = value
            text = json.dumps(manifest)
        else:
            raw = json.dumps(manifest)
            position, insert = value
            text = raw[:position % len(raw)] + insert + raw[position % len(raw):]
        (copy / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            opened = open_artifact(copy)
        except ArtifactError:
            return
        # What opens must be usable without a KeyError or TypeError: every field the code reads.
        opened.inputs, opened.outputs, opened.recipe, opened.capabilities, opened.batch_invariant  # noqa: B018
        assert opened.size_bytes > 0
    finally:
        shutil.rmtree(scratch)


@FAST
@given(change=manifest_changes)
def test_fuzz_manifest_reader(artifact, change):
    _manifest_target(artifact.path, change)


@pytest.mark.slow
@LONG
@given(change=manifest_changes)
def test_fuzz_manifest_reader_long(artifact, change):
    _manifest_target(artifact.path, change)


json_texts = st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                       st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                       st.integers(1, 3000).map(hostile.deep_json))


def _json_target(text: str) -> None:
    try:
        value = safeio.loads_json(text, max_depth=32)
    except InputError:
        return
    json.dumps(value, allow_nan=False)  # what it accepts is plain, finite JSON


@FAST
@given(json_texts)
def test_fuzz_json_reader(text):
    _json_target(text)


@pytest.mark.slow
@LONG
@given(json_texts)
def test_fuzz_json_reader_long(text):
    _json_target(text)


def test_the_fuzz_folder_holds_every_kind_of_file():
    folder = _folder()
    try:
        assert (folder / "link").is_symlink() and (folder / "hard.bin").stat().st_nlink == 2
        np.testing.assert_array_equal(np.frombuffer((folder / "w.bin").read_bytes(), np.float32).reshape(4, 4),
                                      hostile.W)
    finally:
        shutil.rmtree(folder.parent)
