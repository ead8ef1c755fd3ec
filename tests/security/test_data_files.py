"""Data files (issue 19, defect 11): `.npz` headers are checked before anything is read, hostile members
are typed errors, and a Dataset streams with bounded memory as it promises."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

import edgeagent
from edgeagent.cli.main import main
from edgeagent.data import NpzArrays
from edgeagent.errors import InputError
from tests.security import hostile

FLOAT32 = {"descr": "<f4", "fortran_order": False}


HOSTILE = {
    "a member that is not an array": ({"x.npy": ({**FLOAT32, "shape": (2, 32)}, bytes(256)),
                                       "notes.txt": b"hello"}, "not an array"),
    "a header claiming terabytes": ({"x.npy": ({**FLOAT32, "shape": (2**40, 32)}, bytes(256))}, "declares"),
    "a header claiming less than it holds": ({"x.npy": ({**FLOAT32, "shape": (1, 32)}, bytes(256))}, "declares"),
    "an object array": ({"x.npy": ({"descr": "|O", "fortran_order": False, "shape": (2, 32)}, bytes(8))},
                        "objects"),
    "a broken .npy header": ({"x.npy": b"\x93NUMPY\x01\x00\x04\x00{'x'"}, "not a readable"),
    "not a zip": ({}, "not a readable"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_npz_members_are_input_errors(tmp_path, case, mlp_path, capsys):
    members, match = HOSTILE[case]
    path = tmp_path / "in.npz"
    if members:
        hostile.npz_with_members(path, members)
    else:
        path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match=match):
        NpzArrays(path)
    artifact = edgeagent.compile(mlp_path, "onnxruntime", "fp32", out=tmp_path / "art")
    assert main(["run", str(artifact.path), "--inputs", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "internal error" not in err


def test_too_many_members_is_refused_before_reading_them(tmp_path):
    path = hostile.npz_with_members(tmp_path / "many.npz",
                                    {f"a{i}.npy": ({**FLOAT32, "shape": (1,)}, bytes(4)) for i in range(1100)})
    with pytest.raises(InputError, match="members"):
        NpzArrays(path)


def test_a_zip_bomb_streams_in_bounded_memory(tmp_path):
    """64 MiB of zeros in 64 KiB: a Dataset over it holds one batch at a time, never the file."""
    path = hostile.zip_bomb_npz(tmp_path / "bomb.npz", mebibytes=64)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        data = edgeagent.Dataset.from_npz(path, batch_size=512)
        seen = sum(int(feeds["x"].shape[0]) for feeds in data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 64 * 1024
    assert peak < 8 << 20, f"peak {peak / 2**20:.0f} MiB: the file was read whole"


def test_a_truncated_member_is_an_input_error_while_streaming(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.arange(64, dtype=np.float32).reshape(16, 4))
    data = bytearray(path.read_bytes())
    offset = data.index(b"\x93NUMPY") + 200  # inside x's data
    data[offset:offset + 8] = b"\xff" * 8  # stored member: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(InputError):
        list(NpzArrays(path).batches(4))


def test_streamed_batches_equal_numpys_own_reading(tmp_path):
    path = tmp_path / "ok.npz"
    x = np.random.default_rng(0).standard_normal((10, 3, 2)).astype(">f4")  # big-endian, as some tools write
    f = np.asfortranarray(np.arange(20, dtype=np.int64).reshape(10, 2))
    np.savez_compressed(path, x=x, f=f, labels=np.arange(10))
    arrays = NpzArrays(path)
    batches = list(arrays.batches(4, with_labels=True))
    assert [b[0]["x"].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0]["x"] for b in batches]), x.astype("<f4"))
    np.testing.assert_array_equal(np.concatenate([b[0]["f"] for b in batches]), f)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.arange(10))
    assert batches[0][0]["x"].dtype == np.float32 and arrays.all()["x"].shape == (10, 3, 2)
    assert isinstance(zipfile.ZipFile(path).infolist()[0].filename, str)
