"""Export a Hugging Face causal LM to the decoder IR folder (/work/notes/decoder-contract.md).

The model is exported by torch.onnx's dynamo exporter through a thin wrapper that takes the
KV cache as flat `past_key_values.{i}.key/value` tensors, rebuilds transformers' DynamicCache
from them and returns `logits` plus the flat `present.{i}.key/value`: transformers' own forward
(masks, RoPE, GQA) is what gets exported, standard ONNX ops only, with dynamic batch, sequence
and past length. The export is then proved on the task (`parity.check_decoder_parity`):
prefill and decode-step logits within tolerance and greedy continuations identical.

The folder is built in a temporary sibling and renamed into place, so OUT is either the
complete IR or untouched.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ExportMismatch, InputError, ModelRejected, UnsupportedModel
from ..ir import ModelIR, load, save_proto, set_metadata
from . import parity
from .gguf_check import GGUFLimits

IR_FORMAT = "edgeagent.decoder/1"
IR_FILE = "ir.json"
MODEL_FILE = "model.onnx"
TASK = "text-generation"
DEFAULT_OPSET = 18  # the contract's floor; OpenVINO's and TensorRT's ONNX parsers take it
# Example sizes for tracing: past length must be above 1 and differ from the sequence length,
# or torch.export specialises the dims to the example (0/1 specialisation, equal sizes merged).
_EXAMPLE_BATCH, _EXAMPLE_SEQUENCE, _EXAMPLE_PAST = 2, 6, 5


@dataclass(frozen=True)
class DecoderIR:
    """An exported decoder IR folder.

    Attributes:
        path: the folder.
        model: `model.onnx` loaded through `edgeagent.load`.
        metadata: `ir.json` (format, task, architecture, layers, heads, ids, max length, parity).
    """

    path: Path
    model: ModelIR
    metadata: Mapping[str, Any]

    @property
    def num_layers(self) -> int:
        return int(self.metadata["num_layers"])

    @property
    def num_kv_heads(self) -> int:
        return int(self.metadata["num_kv_heads"])

    @property
    def head_dim(self) -> int:
        return int(self.metadata["head_dim"])

    @property
    def eos_token_ids(self) -> list[int]:
        return [int(i) for i in self.metadata["eos_token_ids"]]


def open_decoder_ir(path: str | os.PathLike) -> DecoderIR:
    """Open an IR folder written by `export_causal_lm`, checking ir.json and model.onnx.

    Raises:
        ModelRejected: no ir.json, another format, or model.onnx fails `edgeagent.load`.
    """
    folder = Path(path)
    meta_path = folder / IR_FILE
    if not meta_path.is_file():
        raise ModelRejected(folder, f"no {IR_FILE}: not a decoder IR folder; write one with "
                            "edgeagent.export_causal_lm")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelRejected(meta_path, f"is not JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != IR_FORMAT:
        raise ModelRejected(meta_path, f"format is {metadata.get('format') if isinstance(metadata, dict) else None!r}, "
                            f"not {IR_FORMAT!r}")
    return DecoderIR(folder, load(folder / MODEL_FILE), MappingProxyType(metadata))


def export_causal_lm(source: str | os.PathLike, out: str | os.PathLike, *,
                     max_length: int | None = None, opset: int | None = None,
                     prompts: Sequence[str] | None = None,
                     decode_steps: int = parity.DEFAULT_DECODE_STEPS,
                     greedy_tokens: int = parity.DEFAULT_GREEDY_TOKENS,
                     atol: float = parity.DEFAULT_ATOL, rtol: float = parity.DEFAULT_RTOL,
                     gguf_limits: GGUFLimits = GGUFLimits()) -> DecoderIR:
    """Export a causal LM to a decoder IR folder, proved against transformers.

    Args:
        source: a Hugging Face folder or hub id, a `.gguf` file, or `module:function`
            returning a transformers causal LM or `(model, tokenizer)`.
        out: the IR folder to write (an existing IR folder there is replaced once the new one
            is complete; any other non-empty folder is refused).
        max_length: the longest sequence (prompt + output) the IR admits (default the model's
            max_position_embeddings; at most that).
        opset: ONNX opset, 18 or later (default 18).
        prompts: texts for the parity check (default `parity.DEFAULT_PROMPTS`, plus one chat
            prompt when the tokenizer has a template).
        decode_steps: single-token steps compared after the prefill (default 16).
        greedy_tokens: tokens generated per prompt in the greedy check (default 16).
        atol: absolute tolerance on logits and cache (default 1e-3).
        rtol: relative tolerance on logits and cache (default 1e-3).
        gguf_limits: caps for the GGUF check (default `GGUFLimits()`).

    Returns:
        The DecoderIR (path, ModelIR of model.onnx, ir.json metadata with the parity summary).

    Raises:
        ExportMismatch: a parity check failed; `.report` has one row per check.
        UnsupportedModel: the architecture is not supported, or torch.onnx.export failed.
        ModelRejected: a source file failed its safety check.
        InputError: bad source, out, max_length or opset.
    """
    from .sources import load_causal_lm

    out = Path(out)
    _check_out(out)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < DEFAULT_OPSET:
        raise InputError(f"opset {opset} is below {DEFAULT_OPSET}, the decoder IR's minimum", field="opset")
    loaded = load_causal_lm(source, gguf_limits=gguf_limits)
    model, tokenizer = loaded.model, loaded.tokenizer
    meta = decoder_metadata(model, tokenizer, max_length=max_length, source=loaded.source,
                            source_sha256=loaded.source_sha256)
    proto = export_onnx(model, opset=opset)
    set_metadata(proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        ir = save_proto(proto, staging / MODEL_FILE)
        del proto
        token_lists = _parity_prompts(tokenizer, prompts, meta["max_length"], greedy_tokens + decode_steps)
        report = parity.check_decoder_parity(
            parity.ort_step(ir.path, meta["num_layers"]), parity.torch_step(model), token_lists,
            num_layers=meta["num_layers"], num_kv_heads=meta["num_kv_heads"], head_dim=meta["head_dim"],
            pad_id=meta["pad_token_id"] if meta["pad_token_id"] is not None else 0,
            decode_steps=decode_steps, greedy_tokens=greedy_tokens, atol=atol, rtol=rtol)
        failed = [r for r in report if not r["ok"]]
        if failed:
            raise ExportMismatch(_mismatch_message(failed, len(report), atol, rtol), report)
        _write_side_files(staging, model, tokenizer, max_length=meta["max_length"])
        summary = parity.summarize(report)
        ir_json = {"format": IR_FORMAT, "task": TASK, **meta, "opset": ir.opset,
                   "model_sha256": ir.sha256,
                   "parity": {**summary, "atol": atol, "rtol": rtol, "decode_steps": decode_steps,
                              "greedy_tokens": greedy_tokens, "prompts": len(token_lists)}}
        (staging / IR_FILE).write_text(json.dumps(ir_json, indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_decoder_ir(out)


def decoder_metadata(model, tokenizer, *, max_length: int | None, source: str,
                     source_sha256: str) -> dict[str, Any]:
    """The contract's metadata keys from a transformers model and tokenizer.

    Raises:
        InputError: max_length is not between 1 and the model's max_position_embeddings.
    """
    cfg = model.config
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    positions = int(cfg.max_position_embeddings)
    if max_length is None:
        max_length = positions
    elif not 1 <= int(max_length) <= positions:
        raise InputError(f"max_length {max_length} must be between 1 and the model's "
                         f"max_position_embeddings {positions}", field="max_length")
    gen = getattr(model, "generation_config", None)
    eos: list[int] = []
    for value in (getattr(gen, "eos_token_id", None), cfg.eos_token_id, tokenizer.eos_token_id):
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if item is not None and int(item) not in eos:
                eos.append(int(item))

    def first(*values):
        return next((int(v) for v in values if v is not None), None)

    return {
        "edgeagent.task": TASK,
        "architecture": cfg.model_type,
        "num_layers": int(cfg.num_hidden_layers),
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_size": int(cfg.hidden_size),
        "vocab_size": int(cfg.vocab_size),
        "eos_token_ids": eos,
        "bos_token_id": first(getattr(gen, "bos_token_id", None), cfg.bos_token_id, tokenizer.bos_token_id),
        "pad_token_id": first(getattr(gen, "pad_token_id", None), cfg.pad_token_id, tokenizer.pad_token_id),
        "max_length": int(max_length),
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "source": source,
        "source_sha256": source_sha256,
    }


def export_onnx(model, *, opset: int = DEFAULT_OPSET):
    """Trace a transformers causal LM with flat KV inputs/outputs; return the ModelProto with
    the contract's names and symbolic dims.

    Raises:
        UnsupportedModel: torch.onnx.export failed.
    """
    import torch
    from torch.export import Dim

    cfg = model.config
    layers = int(cfg.num_hidden_layers)
    heads = int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    past_names, present_names = parity.kv_names(layers)
    wrapper = _flat_cache_wrapper(torch, model)
    b, s, p = _EXAMPLE_BATCH, _EXAMPLE_SEQUENCE, _EXAMPLE_PAST
    generator = torch.Generator().manual_seed(0)
    args = (torch.randint(0, int(cfg.vocab_size), (b, s), generator=generator),
            torch.ones(b, p + s, dtype=torch.int64),
            torch.arange(p, p + s, dtype=torch.int64).expand(b, s).contiguous(),
            *(torch.randn(b, kv_heads, p, head_dim, generator=generator) for _ in past_names))
    dyn = Dim.DYNAMIC
    dynamic_shapes = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn},
                      tuple({0: dyn, 2: dyn} for _ in past_names))
    names = ["input_ids", "attention_mask", "position_ids", *past_names]
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            for noisy in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "transformers"):
                logging.getLogger(noisy).setLevel(logging.ERROR)
            program = torch.onnx.export(wrapper, args, None, input_names=names,
                                        output_names=["logits", *present_names], opset_version=opset,
                                        dynamic_shapes=dynamic_shapes, dynamo=True,
                                        external_data=False, verbose=False)
    except Exception as exc:
        cause = exc.__cause__ or exc
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines()
        raise UnsupportedModel(f"torch.onnx.export failed on {type(model).__name__}: "
                               f"{type(cause).__name__}: {detail[0] if detail else ''}") from None
    proto = program.model_proto
    _name_dims(proto, layers)
    proto.producer_name = "edgeagent"
    return proto


def _flat_cache_wrapper(torch, model):
    from transformers import DynamicCache

    layers = int(model.config.num_hidden_layers)

    class FlatCache(torch.nn.Module):
        """(input_ids, attention_mask, position_ids, *past flat) → (logits, *present flat)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)],
                                 config=self.inner.config)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return FlatCache().eval()


def _name_dims(proto, layers: int) -> None:
    """Give inputs and outputs the contract's symbolic dims (the exporter's are s0, s33, …)."""
    past_names, present_names = parity.kv_names(layers)
    wanted: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
        **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
        **{n: {0: "batch", 2: "total_sequence"} for n in present_names},
    }
    rename: dict[str, str] = {}
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, name in wanted.get(value.name, {}).items():
            if axis < len(dims):
                if dims[axis].dim_param and "+" not in dims[axis].dim_param:
                    rename.setdefault(dims[axis].dim_param, name)
                dims[axis].dim_param = name
    # Intermediate shapes keep the exporter's expressions; plain symbols follow the renaming.
    for value in proto.graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def _parity_prompts(tokenizer, prompts: Sequence[str] | None, max_length: int, extra: int) -> list[list[int]]:
    texts = list(prompts) if prompts is not None else list(parity.DEFAULT_PROMPTS)
    if not texts:
        raise InputError("prompts must hold at least one text", field="prompts")
    token_lists = [list(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]
    if prompts is None and getattr(tokenizer, "chat_template", None):
        chat = tokenizer.apply_chat_template([{"role": "user", "content": "Turn off the lights."}],
                                             add_generation_prompt=True, tokenize=True)
        if isinstance(chat, Mapping) or hasattr(chat, "keys"):
            chat = chat["input_ids"]
        token_lists.append([int(t) for t in chat])
    if any(not t for t in token_lists):
        raise InputError("a parity prompt encodes to no tokens", field="prompts")
    longest = max(len(t) for t in token_lists) + extra
    if longest > max_length:
        raise InputError(f"parity prompts need {longest} positions but max_length is {max_length}; "
                         "pass shorter prompts or fewer steps", field="prompts")
    return token_lists


def _write_side_files(folder: Path, model, tokenizer, *, max_length: int) -> None:
    """tokenizer.json, tokenizer_config.json (chat template inline), config.json, generation_config.json."""
    tokenizer.save_pretrained(str(folder))
    template_file = folder / "chat_template.jinja"
    template = getattr(tokenizer, "chat_template", None)
    if template is None and template_file.is_file():
        template = template_file.read_text(encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if template:
        tok_config["chat_template"] = template
    # Loading flags of this machine's copy, not properties of the tokenizer.
    for key in ("is_local", "local_files_only", "name_or_path"):
        tok_config.pop(key, None)
    tok_config["model_max_length"] = max_length
    config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    template_file.unlink(missing_ok=True)
    if not (folder / "tokenizer.json").is_file():
        raise UnsupportedModel(f"the tokenizer ({type(tokenizer).__name__}) has no fast "
                               "(tokenizers) form, and the decoder IR needs tokenizer.json")
    config = model.config.to_dict()
    # A GGUF-loaded config carries its quantization_config (the weights here are dequantized)
    # and no architectures.
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    gen = model.generation_config.to_diff_dict() if getattr(model, "generation_config", None) else {}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n",
                                                   encoding="utf-8")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is a file; choose a folder path", field="out")
    if out.is_dir() and any(out.iterdir()) and not (out / IR_FILE).is_file():
        raise InputError(f"output folder {out} is not empty and is not a decoder IR; choose a "
                         "new folder", field="out")


def _move_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _mismatch_message(failed: list[dict[str, Any]], total: int, atol: float, rtol: float) -> str:
    worst = failed[0]
    if any(r["check"] != "greedy" for r in failed):
        worst = max((r for r in failed if r["check"] != "greedy"), key=lambda r: r.get("max_abs_diff", 0.0))
    where = f"{worst['check']} {worst['output']}"
    if "step" in worst:
        where += f" step {worst['step']}"
    if "prompt" in worst:
        where += f" prompt {worst['prompt']}"
    detail = worst.get("reason") or (f"max abs diff {worst.get('max_abs_diff'):.3g}, argmax agreement "
                                     f"{worst.get('argmax_agreement', 'n/a')}")
    return (f"exported decoder differs from transformers on {len(failed)} of {total} checks "
            f"(atol {atol}, rtol {rtol}); worst: {where}: {detail}. See the exception's .report")


# What a decoder artifact carries beside its graph, so `generate` runs from it alone.
ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
               "config.json", IR_FILE)


def is_decoder(ir: ModelIR) -> bool:
    """Whether a ModelIR is a decoder of the contract (export_causal_lm stamps its task)."""
    return ir.metadata.get("edgeagent.task") == TASK


def copy_assets(ir: ModelIR, out: str | os.PathLike) -> list[str]:
    """Copy the decoder IR folder's tokenizer and configs next to a compiled model; their names.

    Raises:
        ModelRejected: the IR folder lacks tokenizer.json or ir.json (not a whole IR folder).
    """
    import shutil

    folder, out = ir.path.parent, Path(out)
    missing = [name for name in ("tokenizer.json", IR_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelRejected(folder, f"lacks {missing}: compile the decoder IR folder that export_causal_lm "
                            "wrote, not its model.onnx alone")
    copied = []
    for name in ASSET_FILES:
        source = folder / name
        if source.is_file() and not source.is_symlink():
            shutil.copyfile(source, out / name)
            copied.append(name)
    return copied
