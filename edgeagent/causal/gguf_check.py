"""Check a GGUF file with a small bounded reader before gguf or transformers parse it.

gguf's `GGUFReader` memory-maps the file and trusts its header: counts, string lengths, tensor
offsets and sizes are used as they come, so a corrupt or hostile file becomes a numpy error
deep inside transformers, a huge allocation, or tensors read from the wrong bytes. This reader
walks the header itself, refusing each field that is out of bounds before it is used:

- magic and version (2 or 3; version 1 used 32-bit counts and is not read);
- tensor and key/value counts, string lengths, array lengths and nesting, against caps;
- every tensor's dims (at most 4, each positive, element count capped), its ggml type (known
  block and byte sizes, first dim a whole number of blocks), its offset (aligned) and its
  extent (inside the file, not overlapping another tensor, and no more than the alignment's
  padding between one tensor's data and the next: wider gaps mean the dims or type lie);
- the file size, against a cap;
- that the tensors agree with the architecture's header fields (block count, embedding width,
  vocabulary, head counts), which is what a truncated or spliced file gets wrong.

Every refusal is a `ModelRejected` whose `location` names the field.
Needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Mapping

from ..errors import ModelRejected

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# ggml type id → (name, elements per block, bytes per block), as gguf.constants.GGML_QUANT_SIZES
# (a test keeps the two equal). Kept here so the check needs no third-party code.
GGML_TYPES: Mapping[int, tuple[str, int, int]] = MappingProxyType({
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
})
# GGUF metadata value types: id → struct format of a scalar (STRING=8 and ARRAY=9 are variable).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class GGUFLimits:
    """Caps the GGUF check enforces; the defaults admit every public model up to ~30B parameters.

    Attributes:
        max_file_bytes: the whole file (default 64 GiB).
        max_tensors: tensor count in the header (default 65,536).
        max_kv: metadata key/value count (default 65,536).
        max_key_bytes: one metadata key (default 65,535, the GGUF spec's limit).
        max_string_bytes: one string value, e.g. a chat template (default 16 MiB).
        max_name_bytes: one tensor name (default 64, the GGUF spec's limit).
        max_array_items: one metadata array, e.g. the vocabulary (default 16,777,216).
        max_array_depth: arrays of arrays (default 2 levels).
        max_tensor_elements: one tensor's element count (default 2**34).
    """

    max_file_bytes: int = 64 * 1024**3
    max_tensors: int = 1 << 16
    max_kv: int = 1 << 16
    max_key_bytes: int = 65535
    max_string_bytes: int = 16 * 1024**2
    max_name_bytes: int = 64
    max_array_items: int = 1 << 24
    max_array_depth: int = 2
    max_tensor_elements: int = 1 << 34

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GGUFLimits.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor's header entry: ggml dims (innermost first), type and absolute byte range."""

    name: str
    dims: tuple[int, ...]
    ggml_type: str
    offset: int  # absolute, in the file
    nbytes: int


@dataclass(frozen=True)
class GGUFInfo:
    """What the check read: version, metadata (arrays summarised) and tensor entries.

    `metadata` maps each key to its scalar or string value; an array becomes
    `{"array": type_name, "length": n}` (its items are not kept).
    """

    path: Path
    version: int
    alignment: int
    data_offset: int
    file_size: int
    metadata: Mapping[str, Any]
    tensors: tuple[GGUFTensorInfo, ...] = field(repr=False)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None


class _Reader:
    """Reads little-endian fields from a file, never past its end, tracking the position."""

    def __init__(self, fh: BinaryIO, path: Path, size: int, limits: GGUFLimits) -> None:
        self.fh, self.path, self.size, self.limits = fh, path, size, limits
        self.pos = 0

    def reject(self, where: str, reason: str, *, tensor: str | None = None) -> ModelRejected:
        return ModelRejected(self.path, reason, tensor=tensor, location=where)

    def read(self, n: int, where: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise self.reject(where, f"needs {n} bytes at byte {self.pos} but the file ends at "
                              f"{self.size}: the file is truncated; download or convert it again")
        data = self.fh.read(n)
        if len(data) != n:
            raise self.reject(where, "short read: the file changed or is truncated")
        self.pos += n
        return data

    def skip(self, n: int, where: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.reject(where, f"skips {n} bytes at byte {self.pos} but the file ends at "
                              f"{self.size}: the file is truncated or the count is corrupt")
        self.fh.seek(n, os.SEEK_CUR)
        self.pos += n

    def scalar(self, fmt: str, where: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), where))[0]

    def string(self, where: str, cap: int, *, keep: bool = True) -> str | None:
        length = self.scalar("<Q", where)
        if length > cap:
            raise self.reject(where, f"string of {length} bytes is over the cap of {cap}; the "
                              "file is corrupt (or raise the GGUFLimits cap)")
        if not keep:
            self.skip(length, where)
            return None
        raw = self.read(length, where)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.reject(where, "string is not valid UTF-8; the file is corrupt") from None


def check_gguf(path: str | os.PathLike, *, limits: GGUFLimits = GGUFLimits()) -> GGUFInfo:
    """Validate a GGUF file's header and tensor table without trusting any field.

    Args:
        path: the `.gguf` file.
        limits: caps on sizes and counts (default `GGUFLimits()`).

    Returns:
        The header as read: version, metadata (arrays summarised), tensor entries.

    Raises:
        ModelRejected: not a regular file, over the size cap, bad magic or version, a count,
            string or array over its cap, a truncated header, an unknown tensor type, a tensor
            outside the file or overlapping another, or tensors that disagree with the header's
            architecture fields. `location` names the field.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelRejected(path, "no such file (or not a regular file); check the path")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise ModelRejected(path, f"file is {size} bytes, over the cap of {limits.max_file_bytes}; "
                            "raise GGUFLimits.max_file_bytes", location="file size")
    with open(path, "rb") as fh:
        r = _Reader(fh, path, size, limits)
        magic = r.read(4, "magic")
        if magic != GGUF_MAGIC:
            raise r.reject("magic", f"starts with {magic!r}, not {GGUF_MAGIC!r}: not a GGUF file")
        version = r.scalar("<I", "version")
        if version not in SUPPORTED_VERSIONS:
            raise r.reject("version", f"GGUF version {version} is not supported (only "
                           f"{list(SUPPORTED_VERSIONS)}); convert the model with a current llama.cpp")
        n_tensors = r.scalar("<Q", "tensor_count")
        if n_tensors > limits.max_tensors:
            raise r.reject("tensor_count", f"{n_tensors} tensors, over the cap of {limits.max_tensors}")
        n_kv = r.scalar("<Q", "kv_count")
        if n_kv > limits.max_kv:
            raise r.reject("kv_count", f"{n_kv} metadata entries, over the cap of {limits.max_kv}")
        metadata = _read_metadata(r, n_kv)
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1) or alignment > 1 << 16:
            raise r.reject("general.alignment", f"alignment {alignment!r} is not a power of two up to 65536")
        raw = _read_tensor_infos(r, n_tensors)
    data_offset = -(-r.pos // alignment) * alignment
    tensors = _place_tensors(path, raw, data_offset, alignment, size)
    info = GGUFInfo(path.resolve(), version, alignment, data_offset, size,
                    MappingProxyType(metadata), tuple(tensors))
    check_architecture_fields(info)
    return info


def _read_metadata(r: _Reader, n_kv: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for index in range(n_kv):
        key = r.string(f"kv[{index}].key", r.limits.max_key_bytes)
        if key in metadata:
            raise r.reject(f"kv {key!r}", "metadata key appears twice; the file is corrupt")
        value_type = r.scalar("<I", f"kv {key!r} type")
        metadata[key] = _read_value(r, value_type, f"kv {key!r}", depth=0)
    return metadata


def _read_value(r: _Reader, value_type: int, where: str, *, depth: int, keep: bool = True):
    if value_type in _SCALARS:
        value = r.scalar(_SCALARS[value_type], where)
        return value
    if value_type == _STRING:
        return r.string(where, r.limits.max_string_bytes, keep=keep)
    if value_type != _ARRAY:
        raise r.reject(where, f"unknown metadata value type {value_type}; the file is corrupt")
    if depth >= r.limits.max_array_depth:
        raise r.reject(where, f"arrays nested deeper than {r.limits.max_array_depth} levels")
    item_type = r.scalar("<I", f"{where} item type")
    count = r.scalar("<Q", f"{where} length")
    if count > r.limits.max_array_items:
        raise r.reject(where, f"array of {count} items is over the cap of {r.limits.max_array_items}")
    if item_type in _SCALARS:
        r.skip(count * struct.calcsize(_SCALARS[item_type]), where)
    elif item_type in (_STRING, _ARRAY):
        for i in range(count):
            _read_value(r, item_type, f"{where}[{i}]", depth=depth + 1, keep=False)
    else:
        raise r.reject(where, f"unknown array item type {item_type}; the file is corrupt")
    names = {**{k: n for k, n in zip(_SCALARS, ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                                                "float32", "bool", "uint64", "int64", "float64"))},
             _STRING: "string", _ARRAY: "array"}
    return {"array": names[item_type], "length": count}


def _read_tensor_infos(r: _Reader, n_tensors: int) -> list[tuple[str, tuple[int, ...], int, int]]:
    raw = []
    seen: set[str] = set()
    for index in range(n_tensors):
        where = f"tensor_info[{index}]"
        name = r.string(f"{where}.name", r.limits.max_name_bytes)
        if name in seen:
            raise r.reject(f"{where}.name", "tensor name appears twice", tensor=name)
        seen.add(name)
        n_dims = r.scalar("<I", f"{where}.n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.reject(f"{where}.n_dims", f"{n_dims} dims; GGUF tensors have 1 to {MAX_DIMS}", tensor=name)
        dims = tuple(r.scalar("<Q", f"{where}.dims") for _ in range(n_dims))
        if any(d < 1 for d in dims):
            raise r.reject(f"{where}.dims", f"dims {list(dims)} include zero", tensor=name)
        elements = 1
        for d in dims:
            elements *= d
        if elements > r.limits.max_tensor_elements:
            raise r.reject(f"{where}.dims", f"dims {list(dims)} hold {elements} elements, over the "
                           f"cap of {r.limits.max_tensor_elements}", tensor=name)
        ggml_type = r.scalar("<I", f"{where}.type")
        if ggml_type not in GGML_TYPES:
            raise r.reject(f"{where}.type", f"unknown ggml type {ggml_type}", tensor=name)
        offset = r.scalar("<Q", f"{where}.offset")
        raw.append((name, dims, ggml_type, offset))
    return raw


def _place_tensors(path: Path, raw, data_offset: int, alignment: int, size: int) -> list[GGUFTensorInfo]:
    tensors = []
    for index, (name, dims, ggml_type, offset) in enumerate(raw):
        type_name, block, block_bytes = GGML_TYPES[ggml_type]
        where = f"tensor_info[{index}]"
        if dims[0] % block:
            raise ModelRejected(path, f"first dim {dims[0]} is not a whole number of {type_name} "
                                f"blocks of {block}", tensor=name, location=f"{where}.dims")
        elements = 1
        for d in dims:
            elements *= d
        nbytes = elements // block * block_bytes
        if offset % alignment:
            raise ModelRejected(path, f"offset {offset} is not a multiple of the alignment "
                                f"{alignment}", tensor=name, location=f"{where}.offset")
        start = data_offset + offset
        if start + nbytes > size:
            raise ModelRejected(path, f"data at bytes {start}..{start + nbytes} ({type_name} "
                                f"{list(dims)}) is beyond the file's {size} bytes: the file is "
                                "truncated or its header is corrupt", tensor=name,
                                location=f"{where}.offset")
        tensors.append(GGUFTensorInfo(name, dims, type_name, start, nbytes))
    ordered = sorted(tensors, key=lambda t: t.offset)
    for before, after in zip(ordered, ordered[1:]):
        end = before.offset + before.nbytes
        if after.offset < end:
            raise ModelRejected(path, f"data overlaps tensor {before.name!r} (bytes "
                                f"{before.offset}..{end}); the header is corrupt",
                                tensor=after.name, location="tensor_info.offset")
        # Writers lay tensors out back to back, padded to the alignment: a wider gap means the
        # dims or type in the header are not those of the bytes that follow.
        if after.offset - end >= alignment:
            raise ModelRejected(path, f"{after.offset - end} unaccounted bytes after its data "
                                f"({before.ggml_type} {list(before.dims)} is {before.nbytes} bytes, "
                                f"the next tensor starts at {after.offset}): its dims or type do "
                                "not match the data", tensor=before.name, location="tensor_info.dims")
    if ordered:
        last, first = ordered[-1], ordered[0]
        trailing = size - (last.offset + last.nbytes)
        if trailing >= alignment:
            raise ModelRejected(path, f"{trailing} unaccounted bytes after the last tensor's data "
                                f"({last.ggml_type} {list(last.dims)} is {last.nbytes} bytes): its dims "
                                "or type do not match the data", tensor=last.name, location="tensor_info.dims")
        if first.offset - data_offset >= alignment:
            raise ModelRejected(path, f"{first.offset - data_offset} unaccounted bytes before the first "
                                "tensor's data: the offsets do not match the data", tensor=first.name,
                                location="tensor_info.offset")
    return tensors


def check_architecture_fields(info: GGUFInfo) -> None:
    """Check that the tensors agree with the header's architecture fields.

    Only fields that are present are checked, so architectures without them pass; the decoder
    families edgeagent exports (llama, qwen2) have them all.

    Raises:
        ModelRejected: a count or width in the header disagrees with the tensors.
    """
    arch = info.architecture
    if arch is None:
        raise ModelRejected(info.path, "metadata has no general.architecture string; the file is "
                            "not a model GGUF", location="kv 'general.architecture'")
    meta = info.metadata
    by_name = {t.name: t for t in info.tensors}

    def field_int(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def reject(key: str, reason: str, tensor: str | None = None) -> ModelRejected:
        return ModelRejected(info.path, reason, tensor=tensor, location=f"kv '{key}'")

    blocks = sorted({int(m.group(1)) for t in info.tensors if (m := _BLOCK.match(t.name))})
    block_count = field_int("block_count")
    if block_count is not None and blocks != list(range(block_count)):
        have = f"blocks {blocks[0]}..{blocks[-1]} ({len(blocks)} distinct)" if blocks else "no blocks"
        raise reject(f"{arch}.block_count", f"header says {block_count} blocks but the tensors "
                     f"hold {have}; the file is truncated or spliced")
    embed = by_name.get("token_embd.weight")
    width = field_int("embedding_length")
    if embed is not None and width is not None and embed.dims[0] != width:
        raise reject(f"{arch}.embedding_length", f"header says width {width} but token_embd.weight "
                     f"has dims {list(embed.dims)}", tensor="token_embd.weight")
    vocab = field_int("vocab_size")
    tokens = meta.get("tokenizer.ggml.tokens")
    n_tokens = tokens.get("length") if isinstance(tokens, Mapping) else None
    if embed is not None and len(embed.dims) == 2:
        if vocab is not None and embed.dims[1] != vocab:
            raise reject(f"{arch}.vocab_size", f"header says vocabulary {vocab} but "
                         f"token_embd.weight has dims {list(embed.dims)}", tensor="token_embd.weight")
        if n_tokens is not None and n_tokens != embed.dims[1]:
            raise reject("tokenizer.ggml.tokens", f"the tokenizer lists {n_tokens} tokens but "
                         f"token_embd.weight has dims {list(embed.dims)}", tensor="token_embd.weight")
    heads, kv_heads = field_int("attention.head_count"), field_int("attention.head_count_kv")
    if heads is not None and width is not None and (heads < 1 or width % heads):
        raise reject(f"{arch}.attention.head_count", f"{heads} heads do not divide width {width}")
    if heads is not None and kv_heads is not None and (kv_heads < 1 or heads % kv_heads):
        raise reject(f"{arch}.attention.head_count_kv", f"{kv_heads} KV heads do not divide "
                     f"{heads} query heads")
    q = by_name.get("blk.0.attn_q.weight")
    if q is not None and width is not None and q.dims[0] != width:
        raise reject(f"{arch}.embedding_length", f"header says width {width} but "
                     f"blk.0.attn_q.weight has dims {list(q.dims)}", tensor="blk.0.attn_q.weight")
