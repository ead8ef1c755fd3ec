"""Compression beyond quantization: structured pruning, low-rank factorisation, recovery, and a gate.

`edgeagent.compress(model, prune=..., low_rank=..., data=..., recover=..., measure=...)`:

1. **Prune** (`PruneSpec`): attention heads, FFN neurons and whole layers, ranked by magnitude or
   first-order Taylor importance on `data`, removed physically (torch-pruning's DepGraph finds
   the coupled channels), so the exported matrices are smaller. BERT-family encoders (edgeagent's
   compact BERT students, transformers' BertModel teachers) and Llama/Qwen2 decoders (heads in
   whole KV groups). Unstructured sparsity is not offered: zeros in dense ONNX initialisers make
   neither ONNX Runtime's nor OpenVINO's CPU kernels faster, nor the files smaller.
2. **Factorise** (`LowRankSpec`): Linear layers and the word-embedding table into two rank-r
   factors by truncated SVD, only at ranks that save (r < m·n / (m + n)).
3. **Recover** (`RecoverSpec`): distillation from the uncompressed model (`edgeagent.distill`),
   with a hidden-state loss where the widths match.
4. **Measure** (`MeasureSpec`): both exports compiled alike and timed side by side; the recipe is
   kept only if it is faster (or smaller) beyond the noise, else `CompressionRejected`.

The compressed model carries `model.compression` (recipe, steps, shapes), which `save_joint`
writes, `load_joint` rebuilds shapes from, and `export_model` puts into the ONNX metadata, so
artifacts compiled from it say how it was made. Needs the train extra (torch, transformers,
torch-pruning); importing this package does not import torch.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._callable_module import make_callable
from ..errors import CompressionRejected, InputError
from .specs import (LowRankSpec, MeasureSpec, PruneSpec, RecoverSpec, as_low_rank, as_measure, as_prune,
                    as_recover, parse_low_rank, parse_prune)

__all__ = ["CompressionRejected", "LowRankSpec", "MeasureSpec", "PruneSpec", "RecoverSpec", "compress",
           "parse_low_rank", "parse_prune"]

RECORD_FORMAT = "edgeagent.compression/1"


def _task_names(task) -> tuple[list[str] | None, dict[str, str]]:
    if task is None:
        return None, {}
    return [h.output for h in task.heads], {h.output: h.label for h in task.heads}


def _decoder_wrapper(model):
    """A decoder as the distillation trainer drives a model: (input_ids, attention_mask) → (logits,)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask):
            return (self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits,)

    return LogitsOnly().train(model.training)


def _recover(teacher, student, spec: RecoverSpec, data, eval_data, task, *, decoder: bool, progress: bool):
    """Distil `student` from `teacher` in place; returns the training history."""
    from ..distill import distill

    if not spec.epochs:
        return []
    if not data:
        raise InputError("recovery distils on data: pass data= (training examples)", field="data")
    hidden = spec.hidden_loss
    if decoder:
        hidden = None  # the decoders' trainer interface returns logits only
        teacher_model, student_model = _decoder_wrapper(teacher).eval(), _decoder_wrapper(student)
        names = {"output_names": ("logits",), "labels": {}}
    else:
        if hidden == "auto":
            same = teacher.encoder.config.hidden_size == student.encoder.config.hidden_size
            hidden = "mse" if same else None
        teacher_model, student_model = teacher.eval(), student
        names = {"task": task} if task is not None else {}
    distill(teacher_model, student_model, list(data), eval=eval_data if not decoder else None,
            temperature=spec.temperature, alpha=spec.alpha, epochs=spec.epochs, lr=spec.lr,
            batch_size=spec.batch_size, seed=spec.seed, hidden_loss=hidden, patience=spec.patience,
            group_by_length=spec.group_by_length, progress=progress, bf16=spec.bf16, **names)
    return list(getattr(student_model, "training_history", []))


def compress(model, *, prune: PruneSpec | Mapping | str | None = None,
             low_rank: LowRankSpec | Mapping | str | None = None, data: Sequence[Mapping[str, Any]] | None = None,
             recover: RecoverSpec | Mapping | int | None = None, task=None,
             eval_data: Sequence[Mapping[str, Any]] | None = None, teacher=None,
             measure: MeasureSpec | Mapping | str | None = None, workload=None,
             workdir: str | os.PathLike | None = None, progress: bool = True):
    """Prune, factorise and recover a model; keep the result only if it measures better.

    Args:
        model: a JointEncoder or classifier (edgeagent's compact BERT or transformers' BertModel),
            a folder written by `save_joint`, or a Llama/Qwen2 causal LM (pruning and recovery only).
            It is not modified: the compressed model is a copy.
        prune: what structured pruning removes (a PruneSpec, its fields, or "heads=0.5,ffn=0.5").
        low_rank: what is factorised (a LowRankSpec, target → rank, or "embeddings=96,ffn=128").
        data: training-format examples: Taylor importance, recovery and, without a workload, timing.
        recover: distillation after compression (a RecoverSpec, its fields, or an epoch count).
        task: the model's task (heads, labels, export spec); read from the folder when `model` is one.
        eval_data: labelled examples for early stopping during recovery.
        teacher: what recovery distils from (default: `model`, the uncompressed model).
        measure: the gate (a MeasureSpec, its fields, or "speed" / "size"); None skips it.
        workload: times end to end (its reader) for the gate, and calibrates static INT8.
        workdir: where the gate's exports and artifacts go (default: a temporary folder).
        progress: progress bars on a terminal.

    Returns:
        The compressed model, with `model.compression` (recipe, steps, shapes and, when measured,
        the measurement). With `measure.on_reject="keep-input"` and a recipe that did not measure
        better, the input model itself, with `compression_rejected` holding the measurement.

    Raises:
        InputError: an empty recipe, bad ratios or ranks (the parameter and its allowed range are
            named), unknown module names, a recipe that would remove every head of a layer, missing
            data or task where a step needs them.
        CompressionRejected: the compressed export is not faster (or smaller) beyond the noise.
    """
    prune, low_rank = as_prune(prune), as_low_rank(low_rank)
    recover, measure = as_recover(recover), as_measure(measure)
    if (prune is None or prune.empty) and (low_rank is None or low_rank.empty):
        raise InputError("nothing to compress: give prune= (heads, ffn, layers) or low_rank= (targets and ranks)",
                         field="prune")
    if isinstance(model, (str, os.PathLike)):
        from ..distill import load_joint
        from ..tasks import task_from_json

        model = load_joint(model)
        if task is None and model.saved_config.get("labels"):
            task = task_from_json(model.saved_config["labels"])
    from .decoder import is_decoder, prune_decoder

    decoder = is_decoder(model)
    if decoder and low_rank is not None and not low_rank.empty:
        raise InputError("low-rank factorisation is for encoders here; prune decoders (heads, ffn, layers)",
                         field="low_rank")
    if decoder and measure is not None:
        raise InputError("the speed gate exports encoders; measure decoders with the generative path's bench",
                         field="measure")
    if prune is not None and prune.positions is not None:
        if decoder:
            raise InputError("prune positions= trims an encoder's learned position table; decoders use rotary "
                             "positions", field="positions")
        longest = getattr(task, "max_length", None)
        if isinstance(longest, int) and prune.positions < longest:
            raise InputError(f"prune positions={prune.positions}: the task's reader feeds up to {longest} tokens, so "
                             f"keep at least {longest} rows", field="positions")
    work = copy.deepcopy(model).eval()
    previous = getattr(model, "compression", None)
    output_names, label_map = _task_names(task)
    steps: list[dict[str, Any]] = []
    teacher = model if teacher is None else teacher
    recovered: list[Any] = []
    if prune is not None and not prune.empty:
        if decoder:
            steps.append(prune_decoder(work, prune, data=data))
        else:
            from .encoder import prune_encoder

            steps.append(prune_encoder(work, prune, data=data, output_names=output_names, label_map=label_map))
        if recover is not None and recover.after == "each" and low_rank is not None and not low_rank.empty:
            recovered += _recover(teacher, work, recover, data, eval_data, task, decoder=decoder, progress=progress)
    if low_rank is not None and not low_rank.empty:
        from .lowrank import factorise

        steps.append(factorise(work, low_rank))
    if recover is not None:
        recovered += _recover(teacher, work, recover, data, eval_data, task, decoder=decoder, progress=progress)
    work.eval()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "recipe": {"prune": prune.to_json() if prune else None, "low_rank": low_rank.to_json() if low_rank else None,
                   "recover": recover.to_json() if recover else None},
        "steps": steps, "recovery": recovered, "previous": previous}
    if decoder:
        # A decoder's Hugging Face config is its structure; the recipe rides along in config.json.
        work.config.edgeagent_compression = {k: v for k, v in record.items() if k != "previous"}
        work.compression = record
        return work
    from ..distill.structure import describe

    record["structure"] = describe(work)
    work.compression = record
    if measure is None:
        return work
    if task is None:
        raise InputError("measuring needs the model's task (its export spec): pass task=", field="task")
    from ..distill.workflow import export_model
    from .measure import measure_files, verdict

    with tempfile.TemporaryDirectory(prefix="edgeagent-compress-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        base = export_model(task, model, folder / "input.onnx")
        new = export_model(task, work, folder / "compressed.onnx")
        result = measure_files(base, new, spec=measure, workdir=folder, workload=workload, examples=data)
    result["verdict"] = verdict(result)
    record["measured"] = result
    # Assigned again: torch.export restores a module's plain attributes as copies of themselves.
    work.compression = record
    if result["kept"]:
        return work
    if measure.on_reject == "keep-input":
        model.compression_rejected = result
        return model
    raise CompressionRejected(f"compression not kept: {result['verdict']}", result)


make_callable(__name__, "compress")
