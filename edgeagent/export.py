"""Export PyTorch modules to a ModelIR, and prove the export right with a parity check.

Parity is checked on the example inputs and on random inputs with other sizes on every
dynamic axis (other batch sizes and sequence lengths), comparing ONNX Runtime against PyTorch.
A mismatch raises ExportMismatch with the per-output report; it is never only a warning.
Needs the `train` extra (torch; transformers for Hugging Face models).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TORCH_HINT, BackendUnavailable, ExportMismatch, InputError, UnsupportedModel
from .ir import ModelIR, save_proto, set_metadata

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DynamicAxes = Mapping[str, Mapping[int, str] | Sequence[int]]


def _torch():
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(f"exporting from PyTorch needs torch: {TORCH_HINT}") from None
    return torch


def export(model, example_inputs, path: str | os.PathLike, *, input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None, dynamic_axes: DynamicAxes | None = None,
           opset: int | None = None, metadata: Mapping[str, Any] | None = None,
           atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, seed: int = 0) -> ModelIR:
    """Export a PyTorch module to ONNX and check it against PyTorch.

    Args:
        model: a torch.nn.Module (exported in eval mode; its mode is restored afterwards).
        example_inputs: a tensor, a tuple of tensors (positional) or a dict name → tensor
            (keyword, as Hugging Face models take them).
        path: the `.onnx` file to write; written only if parity holds.
        input_names: ONNX input names (default: the dict keys, else forward's parameter names).
        output_names: ONNX output names (default: the output dict's keys, else output_<i>).
        dynamic_axes: name → {axis: dim_name} or [axes] (default: axis 0 of every input and
            output is "batch").
        opset: ONNX opset (default: the exporter's).
        metadata: extra metadata_props, e.g. {"labels": [...]}.
        atol: absolute parity tolerance, as numpy.allclose (default 1e-4).
        rtol: relative parity tolerance, as numpy.allclose (default 1e-3).
        seed: seed for the random parity inputs (default 0).

    Returns:
        The exported ModelIR, loaded through `edgeagent.load`.

    Raises:
        ExportMismatch: ONNX Runtime's outputs differ from PyTorch's; `.report` has per-output
            max abs/rel difference and argmax agreement for every input set checked.
        UnsupportedModel: torch.onnx.export failed.
        InputError: example inputs or names are inconsistent.
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"export takes a torch.nn.Module, got {type(model).__name__}")
    names, args = _normalize_inputs(model, example_inputs, input_names)
    was_training = model.training
    model.eval()
    try:
        wrapper = _flattening_wrapper(torch, model, names, keyword=isinstance(example_inputs, Mapping))
        with torch.inference_mode():
            reference = wrapper(*args)
        outputs = _output_names(model, args, names, isinstance(example_inputs, Mapping), output_names,
                                len(reference))
        axes = _dynamic_axes(dynamic_axes, names, outputs)
        proto = _run_exporter(torch, wrapper, args, names, outputs, axes, opset)
        _rename_symbols(proto, axes)
        meta = {"source": f"torch:{type(model).__module__}.{type(model).__qualname__}",
                "exporter": f"torch.onnx (dynamo) {torch.__version__}"}
        meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
        set_metadata(proto, meta)
        with tempfile.TemporaryDirectory(prefix="edgeagent-export-") as tmp:
            candidate = save_proto(proto, Path(tmp) / "model.onnx")
            report = check_parity(candidate, wrapper, args, names, axes, atol=atol, rtol=rtol, seed=seed)
            failed = [r for r in report if not r["ok"]]
            if failed:
                worst = max(failed, key=lambda r: r.get("max_abs_diff") or 0.0)
                raise ExportMismatch(
                    f"exported model differs from PyTorch on {len(failed)} of {len(report)} checks; "
                    f"worst: output {worst['output']!r} on {worst['inputs']} inputs {worst['shapes']}, "
                    f"max abs diff {worst.get('max_abs_diff')}, max rel diff {worst.get('max_rel_diff')} "
                    f"(atol {atol}, rtol {rtol}); {worst.get('reason', '')}".rstrip("; "), report)
            return save_proto(candidate.proto(), path)
    finally:
        model.train(was_training)


def _normalize_inputs(model, example_inputs, input_names):
    torch = _torch()
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        names = list(input_names or example_inputs.keys())
        if set(names) != set(example_inputs):
            raise InputError(f"input_names {names} do not match the example dict keys "
                             f"{list(example_inputs)}", field="input_names")
        args = tuple(example_inputs[n] for n in names)
    elif isinstance(example_inputs, (tuple, list)):
        args = tuple(example_inputs)
        if input_names is not None:
            names = list(input_names)
        else:
            params = [p.name for p in inspect.signature(model.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            names = params[:len(args)] if len(params) >= len(args) else [f"input_{i}" for i in range(len(args))]
        if len(names) != len(args):
            raise InputError(f"{len(names)} input_names for {len(args)} example inputs", field="input_names")
    else:
        raise InputError("example_inputs must be a tensor, a tuple of tensors or a dict of name "
                         f"to tensor, got {type(example_inputs).__name__}")
    for name, arg in zip(names, args):
        if not isinstance(arg, torch.Tensor):
            raise InputError(f"example input {name!r} is {type(arg).__name__}, expected a tensor", field=name)
    if len(set(names)) != len(names):
        raise InputError(f"input names must be unique, got {names}", field="input_names")
    return names, args


def _flatten(torch, value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):  # transformers' ModelOutput is a Mapping
        return [t for v in value.values() for t in _flatten(torch, v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flatten(torch, v)]
    if value is None:
        return []
    raise InputError(f"model returned a {type(value).__name__}; export needs tensors, tuples or dicts of tensors")


def _flattening_wrapper(torch, model, names, *, keyword: bool):
    class Flattened(torch.nn.Module):
        """Takes inputs positionally in `names` order and returns a flat tuple of tensors."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args):
            result = self.inner(**dict(zip(names, args))) if keyword else self.inner(*args)
            return tuple(_flatten(torch, result))

    return Flattened().eval()


def _output_names(model, args, names, keyword, output_names, count) -> list[str]:
    if output_names is not None:
        if len(output_names) != count:
            raise InputError(f"{len(output_names)} output_names for {count} model outputs", field="output_names")
        return list(output_names)
    torch = _torch()
    with torch.inference_mode():
        raw = model(**dict(zip(names, args))) if keyword else model(*args)
    if isinstance(raw, Mapping) and len(raw) == count and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return [str(k) for k in raw.keys()]
    return ["output" if count == 1 else f"output_{i}" for i in range(count)]


def _dynamic_axes(dynamic_axes, inputs, outputs) -> dict[str, dict[int, str]]:
    if dynamic_axes is None:
        return {name: {0: "batch"} for name in [*inputs, *outputs]}
    result: dict[str, dict[int, str]] = {}
    for name, axes in dynamic_axes.items():
        if name not in inputs and name not in outputs:
            raise InputError(f"dynamic_axes names {name!r}, which is neither an input {inputs} nor "
                             f"an output {outputs}", field="dynamic_axes")
        if isinstance(axes, Mapping):
            result[name] = {int(a): str(d) for a, d in axes.items()}
        else:
            result[name] = {int(a): f"{name}_dim{int(a)}" for a in axes}
    return result


def _run_exporter(torch, wrapper, args, names, outputs, axes, opset):
    from torch.export import Dim

    # One entry for the wrapper's *args tuple, holding one spec per input.
    dynamic_shapes = (tuple({axis: Dim.DYNAMIC for axis in axes.get(n, {})} or None for n in names),)
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            for noisy in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
                logging.getLogger(noisy).setLevel(logging.ERROR)
            program = torch.onnx.export(wrapper, args, None, input_names=list(names),
                                        output_names=list(outputs), opset_version=opset,
                                        dynamic_shapes=dynamic_shapes, dynamo=True,
                                        external_data=False, verbose=False)
    except Exception as exc:
        cause = exc.__cause__ or exc
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines()
        raise UnsupportedModel(f"torch.onnx.export failed: {type(cause).__name__}: "
                               f"{detail[0] if detail else ''}. If a dynamic axis is fixed inside "
                               "the model, leave it out of dynamic_axes") from None
    return program.model_proto


def _rename_symbols(proto, axes: Mapping[str, Mapping[int, str]]) -> None:
    """Give the exporter's symbols (s0, s33, …) the names the user chose (batch, sequence)."""
    rename: dict[str, str] = {}
    values = {v.name: v for v in [*proto.graph.input, *proto.graph.output]}
    for name, dims in axes.items():
        value = values.get(name)
        if value is None:
            continue
        shape = value.type.tensor_type.shape.dim
        for axis, wanted in dims.items():
            if axis < len(shape) and shape[axis].dim_param:
                rename.setdefault(shape[axis].dim_param, wanted)
    if not rename:
        return
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def check_parity(ir: ModelIR, module, args, names, axes, *, atol: float, rtol: float,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Compare ONNX Runtime and PyTorch on the example inputs and on resized random inputs."""
    import onnxruntime as ort

    torch = _torch()
    session = ort.InferenceSession(str(ir.path), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in ir.outputs]
    report: list[dict[str, Any]] = []
    for label, feeds in _parity_inputs(args, names, axes, seed):
        with torch.inference_mode():
            expected = [t.detach().cpu().numpy() for t in module(*(torch.from_numpy(feeds[n]) for n in names))]
        actual = session.run(output_names, feeds)
        shapes = {n: list(feeds[n].shape) for n in names}
        for name, ref, got in zip(output_names, expected, actual):
            report.append(_compare(name, label, shapes, ref, got, atol, rtol))
    return report


def _parity_inputs(args, names, axes, seed):
    rng = np.random.default_rng(seed)
    example = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
    yield "example", example
    symbols: dict[str, int] = {}
    for n in names:
        for axis, sym in axes.get(n, {}).items():
            symbols.setdefault(sym, example[n].shape[axis])
    if not symbols:
        return
    for label, resize in (("random_larger", lambda s: s + 3), ("random_smaller", lambda s: 1 if s > 1 else 2)):
        sizes = {sym: resize(size) for sym, size in symbols.items()}
        feeds = {}
        for n in names:
            base = example[n]
            shape = list(base.shape)
            for axis, sym in axes.get(n, {}).items():
                shape[axis] = sizes[sym]
            feeds[n] = _random_like(rng, base, tuple(shape))
        yield label, feeds


def _random_like(rng, base: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(base.dtype, np.floating):
        scale = float(base.std()) or 1.0
        return (rng.standard_normal(shape) * scale + float(base.mean())).astype(base.dtype)
    # Integer inputs are ids or masks: reuse the values the example holds, so they stay valid.
    values = np.unique(base)
    return rng.choice(values, size=shape).astype(base.dtype)


def _compare(name, label, shapes, ref, got, atol, rtol) -> dict[str, Any]:
    row: dict[str, Any] = {"output": name, "inputs": label, "shapes": shapes}
    if ref.shape != got.shape:
        return {**row, "ok": False, "reason": f"shape {list(got.shape)} instead of {list(ref.shape)}"}
    if ref.dtype.kind not in "fc":
        equal = bool(np.array_equal(ref, got))
        return {**row, "ok": equal, "max_abs_diff": float(np.abs(ref.astype(np.float64) - got).max()) if ref.size else 0.0,
                **({} if equal else {"reason": "integer outputs differ"})}
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    finite_match = bool(np.array_equal(np.isfinite(ref), np.isfinite(got)))
    row["max_abs_diff"] = float(np.nanmax(diff)) if diff.size else 0.0
    row["max_rel_diff"] = float(np.nanmax(diff / (np.abs(ref) + 1e-12))) if diff.size else 0.0
    if ref.ndim >= 1 and ref.shape[-1] > 1 and ref.size:
        row["argmax_agreement"] = float((ref.argmax(-1) == got.argmax(-1)).mean())
    close = bool(np.allclose(got, ref, atol=atol, rtol=rtol, equal_nan=True))
    row["ok"] = close and finite_match
    if not finite_match:
        row["reason"] = "NaN/Inf pattern differs"
    return row


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a checkpoint's state dict safely: safetensors, or torch.load(weights_only=True).

    Raises:
        ModelRejected: the file is not a safetensors or weights-only torch checkpoint.
    """
    from .errors import ModelRejected

    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ModelRejected(path, "no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelRejected(path, f"not a valid safetensors file: {exc}") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelRejected(path, f"refused by torch.load(weights_only=True): {str(exc).splitlines()[0]}; "
                            "checkpoints must hold tensors only (save them as safetensors)") from None
    if not isinstance(state, Mapping):
        raise ModelRejected(path, f"checkpoint holds a {type(state).__name__}, not a state dict")
    return dict(state)


HF_TASKS = {
    "text-classification": ("AutoModelForSequenceClassification", ("batch",)),
    "token-classification": ("AutoModelForTokenClassification", ("batch", "sequence")),
    "feature-extraction": ("AutoModel", ("batch", "sequence")),
}


def export_hf(model_id_or_path: str | os.PathLike, path: str | os.PathLike, *,
              task: str = "text-classification", sequence_length: int = 16, opset: int | None = None,
              atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> ModelIR:
    """Export a Hugging Face encoder (BERT/MiniLM family) with dynamic batch and sequence.

    Args:
        model_id_or_path: a local model folder, or a hub id (resolved offline from the cache
            when HF_HUB_OFFLINE=1).
        path: the `.onnx` file to write.
        task: text-classification, token-classification or feature-extraction.
        sequence_length: example sequence length (default 16); parity also checks others.

    Raises:
        InputError: unknown task; BackendUnavailable: transformers missing; plus `export`'s.
    """
    if task not in HF_TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {sorted(HF_TASKS)}", field="task")
    try:
        import transformers
    except ImportError:
        raise BackendUnavailable(f"exporting Hugging Face models needs transformers: {TORCH_HINT}") from None
    auto_name, output_axes = HF_TASKS[task]
    source = str(model_id_or_path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        model = getattr(transformers, auto_name).from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load Hugging Face model {source!r}: {str(exc).splitlines()[0]}",
                         field="model") from None
    batch = tokenizer(["turn on the kitchen lights", "what is the temperature in the living room"],
                      padding="max_length", truncation=True, max_length=sequence_length, return_tensors="pt")
    example = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    out_names = ["logits"] if task != "feature-extraction" else ["last_hidden_state"]
    axes: dict[str, dict[int, str]] = {k: {0: "batch", 1: "sequence"} for k in example}
    axes[out_names[0]] = {i: name for i, name in enumerate(output_axes)}
    meta: dict[str, Any] = {"source": f"huggingface:{source}", "task": task, "tokenizer": source}
    id2label = getattr(model.config, "id2label", None)
    if task != "feature-extraction" and id2label:
        meta["labels"] = [id2label[i] for i in sorted(id2label)]

    class _FirstOutput(_torch().nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, **kwargs):
            return {out_names[0]: self.inner(**kwargs, return_dict=True)[0]}

    return export(_FirstOutput().eval(), example, path, output_names=out_names, dynamic_axes=axes,
                  opset=opset, metadata=meta, atol=atol, rtol=rtol)


from ._callable_module import make_callable  # noqa: E402

make_callable(__name__, "export")
