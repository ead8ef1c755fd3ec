"""Distillation: `edgeagent.distill(teacher, student, train, ...)` and the student factory.

Needs the `train` extra (torch, transformers). Importing this package does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._callable_module import make_callable
from ..errors import InputError
from ..tasks import Task
from .models import load_encoder, model_for_task, student_from_teacher
from .persist import load_joint, save_joint

__all__ = ["distill", "finetune", "load_encoder", "load_joint", "model_for_task", "save_joint",
           "student_from_teacher"]


def distill(teacher, student, train: Sequence[Mapping[str, Any]], *, eval: Sequence[Mapping[str, Any]] | None = None,
            task: Task | None = None, temperature: float = 2.0, alpha: float = 0.5, epochs: int = 10,
            lr: float = 1e-3, batch_size: int = 32, seed: int = 0, hidden_loss: str | None = None,
            hidden_weight: float = 1.0, output_names: Sequence[str] = ("logits",),
            labels: Mapping[str, str] | None = None, metric: Callable | None = None, patience: int = 2,
            group_by_length: bool = False, checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
            progress: bool = True, bf16: bool | str = False):
    """Train `student` to match `teacher` (and the labels, where the examples have them).

    Args:
        teacher: a torch module in eval mode; its outputs on `train` are computed once and cached.
        student: a torch module with the same output heads (shapes are checked before training).
        train: examples, each a mapping of numpy arrays: `input_ids`, `attention_mask` and,
            optionally, labels (see `labels`). Without labels the teacher's outputs are the targets.
        eval: labelled examples for early stopping on `metric` (default None: train all epochs).
        task: the task whose heads the models carry (an `edgeagent.tasks` Task); it sets
            `output_names`, `labels` and `metric` (its `training_metric`) unless they are given.
        temperature: softening T of both distributions (default 2.0).
        alpha: weight of the distillation term; 1 − alpha weighs cross-entropy (default 0.5).
        epochs: passes over `train` at most (default 10).
        lr: AdamW's peak learning rate, after a linear warm-up (default 1e-3).
        batch_size: examples per step (default 32).
        seed: seeds shuffling, dropout and initialisation: same seed, same student (default 0).
        hidden_loss: "mse" adds a hidden-state loss through a learned projection (default None).
        hidden_weight: its weight (default 1.0).
        output_names: names of the model's outputs, in order (default ("logits",)).
        labels: output name → label key, e.g. {"intent_logits": "intent", "slot_logits": "tags"}.
        metric: fn(predictions, examples) → float, higher is better (default: accuracy of the first
            labelled classification head).
        patience: epochs without improvement before stopping early (default 2).
        group_by_length: batch sentences of similar length together (Hugging Face's length-grouped
            sampling): less padding, so each epoch is faster; the batches differ from the default's.
        checkpoint_dir: where safetensors checkpoints go each epoch (default None).
        resume: continue from the last checkpoint in `checkpoint_dir`.
        progress: progress bars on a terminal.
        bf16: run the training forward pass under bf16 autocast: True, False, or "auto" (where
            the CPU has AVX512-BF16 or AMX; `edgeagent.hostinfo.bf16_support()` says). Weights,
            optimizer state, the teacher's outputs and evaluation stay float32 (default False).

    Returns:
        The student with the weights of its best epoch, in eval mode.

    Raises:
        InputError: an empty training set, labels outside the label set, heads whose shapes differ
            from the teacher's, a teacher in training mode.
    """
    from .trainer import train as run

    output_names, labels, metric = _from_task(task, output_names, labels, metric)
    return run(student, train, teacher=teacher, eval_set=eval, output_names=output_names, label_map=labels,
               temperature=temperature, alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
               hidden_loss=hidden_loss, hidden_weight=hidden_weight, metric=metric, patience=patience,
               group_by_length=group_by_length, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
               bf16=bf16)


def finetune(model, train: Sequence[Mapping[str, Any]], *, eval=None, task: Task | None = None, epochs: int = 3,
             lr: float = 5e-5, batch_size: int = 32, seed: int = 0, output_names: Sequence[str] = ("logits",),
             labels: Mapping[str, str] | None = None, metric: Callable | None = None, patience: int = 2,
             group_by_length: bool = False, checkpoint_dir=None, resume: bool = False, progress: bool = True,
             bf16: bool | str = False):
    """Supervised training with cross-entropy on every labelled head (how the teacher is made).

    The arguments are `distill`'s, without the teacher's."""
    from .trainer import train as run

    output_names, labels, metric = _from_task(task, output_names, labels, metric)
    return run(model, train, teacher=None, eval_set=eval, output_names=output_names, label_map=labels,
               epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, metric=metric, patience=patience,
               group_by_length=group_by_length, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
               bf16=bf16)


def _from_task(task: Task | None, output_names, labels, metric):
    """Heads, label keys and the early-stopping metric from a task, where the caller gave none."""
    if task is None:
        return output_names, labels, metric
    if not task.heads:
        raise InputError(f"task {task.name!r} has no trainable heads (does it know its labels?)", field="task")
    names = tuple(head.output for head in task.heads)
    if tuple(output_names) == ("logits",):
        output_names = names
    return output_names, labels or {head.output: head.label for head in task.heads}, metric or task.training_metric


make_callable(__name__, "distill")
