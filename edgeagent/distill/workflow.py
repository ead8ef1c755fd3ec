"""Teacher and student for any trainable workload, through its task (needs the train extra).

A workload supplies the data (`training_examples`, optionally `transfer_examples`) and its task
the heads, the early-stopping metric and the export spec; these functions tie them to
`finetune`, `distill` and the exporter, so `edgeagent finetune`, `edgeagent distill` and the demo
share one path and name no workload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError


def require_trainable(workload) -> None:
    """Raises InputError unless `workload` has training data and a task with heads."""
    if not callable(getattr(workload, "training_examples", None)) or not getattr(workload, "task", None):
        raise InputError(f"workload {getattr(workload, 'name', workload)!r} has no training data (it needs "
                         "training_examples() and a task); choose a trainable workload", field="workload")
    if not workload.task.heads:
        raise InputError(f"workload {workload.name!r}'s task {workload.task.name!r} has no trainable heads",
                         field="workload")


def new_teacher(task, base: str | os.PathLike | None = None):
    """A pre-trained encoder (default all-MiniLM-L6-v2, offline) with the task's heads on top."""
    from .models import load_encoder, model_for_task

    return model_for_task(load_encoder(base), task)


def train_teacher(workload, *, base=None, epochs: int = 3, lr: float = 8e-5, batch_size: int = 32, seed: int = 0,
                  limit: int | None = None, group_by_length: bool = False, checkpoint_dir=None, resume: bool = False,
                  progress: bool = True, bf16: bool | str = False):
    """Fine-tune a teacher on the workload's train split, stopping early on its dev split."""
    from . import finetune

    require_trainable(workload)
    train = workload.training_examples("train", seed=seed)[:limit]
    return finetune(new_teacher(workload.task, base), train, eval=workload.training_examples("dev", seed=seed),
                    task=workload.task, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    group_by_length=group_by_length, checkpoint_dir=checkpoint_dir, resume=resume,
                    progress=progress, bf16=bf16)


def score(task, model, examples) -> dict[str, float]:
    """The task's metrics of a torch model on training-format examples."""
    from .trainer import predict

    scorer = getattr(task, "score", None)
    predictions = predict(model, examples, output_names=[h.output for h in task.heads])
    if scorer is not None:
        return scorer(predictions, examples)
    return {task.primary_metric: task.training_metric(predictions, examples)}


def export_model(task, model, path: str | os.PathLike) -> Path:
    """Parity-checked ONNX export with the task's names and dynamic axes, and the task itself in the
    model's metadata (`tasks.base.TASK_METADATA_KEY`).

    A model `edgeagent.compress` made carries its recipe and structure (`model.compression`);
    they go into the ONNX metadata under `compression`, so every artifact compiled from the file
    (whose backends keep the source's metadata) says how it was compressed.
    """
    import torch

    from ..export import export

    from ..tasks.base import TASK_METADATA_KEY

    spec = task.export_spec()
    # The task travels inside the model, so an agent folder can check its agent.json against it;
    # a compressed model's recipe too.
    metadata = {TASK_METADATA_KEY: json.dumps(task.to_json(), sort_keys=True)}
    compression = getattr(model, "compression", None)
    if compression:
        metadata["compression"] = compression
    export(model, spec.example_inputs(torch), path, input_names=list(spec.input_names),
           output_names=list(spec.output_names), dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
           metadata=metadata)
    return Path(path)


def saved_labels(task) -> dict[str, Any]:
    """What a saved model folder records of its task (`save_joint(labels=...)`)."""
    return task.to_json()
