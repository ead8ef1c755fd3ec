"""Knowledge distillation and supervised fine-tuning for classifiers and joint tagger models.

Loss per output head: α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1−α)·CE(labels)
(Hinton et al., 2015); token heads average over real tokens only. Without labels the teacher's
outputs are the targets (α = 1). The teacher runs once over the training set and its outputs
are cached. An optional hidden-state loss (MSE through a learned projection) follows TinyBERT.
Checkpoints are safetensors (weights) plus a trainer state loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import Steps
from ..tasks import IGNORE
from .models import _torch

Example = Mapping[str, Any]


def _outputs_dict(raw, names: Sequence[str]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, (tuple, list)):
        raw = (raw,)
    if len(raw) < len(names):
        raise InputError(f"the model returns {len(raw)} outputs but output_names has {list(names)}")
    return dict(zip(names, raw))


def collate(batch: Sequence[Example], torch) -> dict[str, Any]:
    """Pad 1-D per-token arrays to the batch's longest (ids and mask with 0, labels with IGNORE)."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [np.asarray(e[key]) for e in batch]
        if values[0].ndim == 0:
            out[key] = torch.as_tensor(np.stack(values))
            continue
        length = max(len(v) for v in values)
        fill = 0 if key in ("input_ids", "attention_mask", "token_type_ids") else IGNORE
        padded = np.full((len(values), length, *values[0].shape[1:]), fill, dtype=values[0].dtype)
        for row, v in enumerate(values):
            padded[row, :len(v)] = v
        out[key] = torch.as_tensor(padded)
    return out


def _check_examples(train: Sequence[Example], name: str) -> None:
    if not train:
        raise InputError(f"the {name} set is empty: distillation needs at least one example", field=name)
    for key in ("input_ids", "attention_mask"):
        if key not in train[0]:
            raise InputError(f"{name} examples need {key!r}; they have {sorted(train[0])}", field=key)


def _check_labels(train: Sequence[Example], label_map: Mapping[str, str], sizes: Mapping[str, int]) -> None:
    for output, key in label_map.items():
        if key not in train[0]:
            continue
        values = np.concatenate([np.atleast_1d(np.asarray(e[key])) for e in train])
        values = values[values != IGNORE]
        bad = values[(values < 0) | (values >= sizes[output])]
        if bad.size:
            raise InputError(f"labels {key!r} hold {sorted(set(bad.tolist()))[:5]} outside the label set "
                             f"0..{sizes[output] - 1} of output {output!r}", field=key)


def _batches(lengths: Sequence[int], batch_size: int, generator, torch, *,
             group_by_length: bool = False) -> list[list[int]]:
    """Shuffled batches of example indices; with `group_by_length`, Hugging Face's length-grouped
    order (random mega-batches of 50 batches, each sorted by length), so batches pad little."""
    if group_by_length:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        order = get_length_grouped_indices(list(lengths), batch_size, generator=generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def kd_loss(student_logits, teacher_logits, labels, mask, *, temperature: float, alpha: float, torch):
    """α·T²·KL + (1−α)·CE for one head; `mask` marks real tokens for token heads (else None)."""
    functional = torch.nn.functional
    t = temperature
    log_p = functional.log_softmax(student_logits / t, dim=-1)
    q = functional.softmax(teacher_logits / t, dim=-1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(-1)
    if mask is not None:
        kl = (kl * mask).sum() / mask.sum().clamp_min(1)
    else:
        kl = kl.mean()
    loss = alpha * t * t * kl
    if labels is not None and alpha < 1:
        flat = student_logits.reshape(-1, student_logits.shape[-1])
        loss = loss + (1 - alpha) * functional.cross_entropy(flat, labels.reshape(-1).long(), ignore_index=IGNORE)
    return loss


def _default_metric(outputs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                    label_map: Mapping[str, str]) -> float:
    """Accuracy of the first sequence-level head that has labels."""
    for output, key in label_map.items():
        if key in labels and outputs[output].ndim == 2:
            return float(np.mean(outputs[output].argmax(-1) == labels[key]))
    raise InputError("no labelled classification head to measure; pass metric=")


def predict(model, examples: Sequence[Example], *, batch_size: int = 128, output_names=("logits",)):
    """Outputs for every example, padded per batch and returned per example (unpadded)."""
    torch, _ = _torch()
    model.eval()
    results: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = collate([{k: e[k] for k in ("input_ids", "attention_mask")} for e in chunk], torch)
            raw = _outputs_dict(model(batch["input_ids"], batch["attention_mask"]), output_names)
            for row, example in enumerate(chunk):
                length = len(example["input_ids"])
                results.append({k: (v[row, :length] if v.ndim == 3 else v[row]).float().numpy()
                                for k, v in raw.items()})
    return results


def evaluate(model, examples: Sequence[Example], *, output_names, label_map, metric=None,
             batch_size: int = 128) -> float:
    predictions = predict(model, examples, batch_size=batch_size, output_names=output_names)
    if metric is not None:
        return float(metric(predictions, examples))
    outputs = {k: np.stack([p[k] for p in predictions]) for k in predictions[0] if predictions[0][k].ndim == 1}
    labels = {key: np.asarray([e[key] for e in examples]) for key in label_map.values()
              if key in examples[0] and np.asarray(examples[0][key]).ndim == 0}
    return _default_metric(outputs, labels, label_map)


def train(model, train_set: Sequence[Example], *, teacher=None, eval_set: Sequence[Example] | None = None,
          output_names: Sequence[str] = ("logits",), label_map: Mapping[str, str] | None = None,
          temperature: float = 2.0, alpha: float = 0.5, epochs: int = 3, lr: float = 5e-4,
          batch_size: int = 32, seed: int = 0, hidden_loss: str | None = None, hidden_weight: float = 1.0,
          metric: Callable | None = None, patience: int = 2, checkpoint_dir: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True, weight_decay: float = 0.01,
          warmup_fraction: float = 0.06, group_by_length: bool = False, bf16: bool | str = False) -> Any:
    """The loop behind `distill` (with a teacher) and `finetune` (without); returns the best model.

    `bf16` (True, False or "auto": where the CPU computes bf16 natively) runs each training step's
    forward pass and loss under `torch.autocast("cpu", torch.bfloat16)`; weights, optimizer state,
    the teacher's cached outputs and evaluation stay float32. What ran and why is the returned
    model's `training_bf16` and each epoch's "bf16" in `training_history`.
    """
    from ..hostinfo import resolve_bf16

    torch, _ = _torch()
    bf16, why_bf16 = resolve_bf16(bf16)
    _check_examples(train_set, "training")
    label_map = dict(label_map or {name: "labels" for name in output_names})
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    probe = collate(list(train_set[:2]), torch)
    model.eval()
    with torch.no_grad():
        student_probe = _outputs_dict(model(probe["input_ids"], probe["attention_mask"]), output_names)
    sizes = {k: int(v.shape[-1]) for k, v in student_probe.items()}
    cache = None
    projection = None
    if teacher is not None:
        if teacher.training:
            raise InputError("the teacher is in training mode (dropout on): call teacher.eval() before "
                             "distilling", field="teacher")
        with torch.no_grad():
            teacher_probe = _outputs_dict(teacher(probe["input_ids"], probe["attention_mask"]), output_names)
        for name in output_names:
            if tuple(teacher_probe[name].shape) != tuple(student_probe[name].shape):
                raise InputError(f"student output {name!r} has shape {tuple(student_probe[name].shape)}, the "
                                 f"teacher's {tuple(teacher_probe[name].shape)}: heads must match", field="student")
    _check_labels(train_set, label_map, sizes)
    if teacher is not None:
        cache = _teacher_cache(teacher, train_set, output_names, hidden_loss is not None, torch, progress)
        if hidden_loss is not None:
            if hidden_loss != "mse":
                raise InputError(f"hidden_loss must be None or 'mse', got {hidden_loss!r}", field="hidden_loss")
            with torch.no_grad():
                s_hidden = model(probe["input_ids"], probe["attention_mask"], return_hidden=True)[-1].shape[-1]
            t_hidden = cache[0]["hidden"].shape[-1]
            projection = torch.nn.Linear(s_hidden, t_hidden)
    parameters = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total = max(1, steps_per_epoch * epochs)
    warmup = int(total * warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)) * max(0.0, (total - step) / total))
    state = {"epoch": 0, "best": -math.inf, "stale": 0, "history": []}
    folder = Path(checkpoint_dir) if checkpoint_dir else None
    if folder and resume and (folder / "trainer_state.pt").is_file():
        state = _load_checkpoint(folder, model, projection, optimizer, scheduler, generator, torch)
    best_state = None
    lengths = [len(e["input_ids"]) for e in train_set]
    epochs_bar = Steps(epochs - state["epoch"], "distillation" if teacher is not None else "fine-tuning",
                       unit="epoch", enabled=progress)
    for epoch in range(state["epoch"], epochs):
        model.train()
        started = time.perf_counter()
        losses = []
        batches = _batches(lengths, batch_size, generator, torch, group_by_length=group_by_length)
        bar = _bar(len(batches), f"epoch {epoch + 1}/{epochs}", progress)
        for indices in batches:
            batch = collate([train_set[i] for i in indices], torch)
            needs_hidden = projection is not None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                raw = model(batch["input_ids"], batch["attention_mask"],
                            **({"return_hidden": True} if needs_hidden else {}))
                outputs = _outputs_dict(raw[:-1] if needs_hidden else raw, output_names)
                mask = batch["attention_mask"].float()
                loss = 0.0
                for name in output_names:
                    logits = outputs[name].float()
                    labels = batch.get(label_map.get(name, ""))
                    token_mask = mask if logits.ndim == 3 else None
                    if cache is None:
                        flat = logits.reshape(-1, logits.shape[-1])
                        loss = loss + torch.nn.functional.cross_entropy(flat, labels.reshape(-1).long(),
                                                                        ignore_index=IGNORE)
                    else:
                        target = _cached_batch(cache, indices, name, logits.shape, torch)
                        use_alpha = alpha if labels is not None else 1.0
                        loss = loss + kd_loss(logits, target, labels, token_mask, temperature=temperature,
                                              alpha=use_alpha, torch=torch)
                if needs_hidden:
                    target = _cached_batch(cache, indices, "hidden",
                                           (*raw[-1].shape[:2], cache[0]["hidden"].shape[-1]), torch)
                    diff = ((projection(raw[-1]).float() - target) ** 2).mean(-1)
                    loss = loss + hidden_weight * (diff * mask).sum() / mask.sum().clamp_min(1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        bar.close()
        score = evaluate(model, eval_set, output_names=output_names, label_map=label_map, metric=metric) \
            if eval_set else -float(np.mean(losses))
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "eval": score,
                  "seconds": time.perf_counter() - started, "bf16": bf16}
        state["history"].append(record)
        epochs_bar.done(f"epoch {epoch + 1}/{epochs}", loss=record["loss"], eval=record["eval"])
        improved = score > state["best"]
        if improved:
            state["best"], state["stale"] = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        if folder:
            _save_checkpoint(folder, model, projection, optimizer, scheduler, generator, state, best_state, torch)
        if eval_set and state["stale"] >= patience:
            break  # early stopping on the eval metric
    epochs_bar.close()
    if best_state is None and folder and (folder / "best.safetensors").is_file():
        from .persist import read_safetensors

        best_state = read_safetensors(folder / "best.safetensors", what="checkpoint")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    model.training_history = state["history"]
    model.training_bf16 = {"used": bf16, "why": why_bf16}
    return model


def _bar(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch", disable=None if enabled else True, leave=False)


def _teacher_cache(teacher, train_set, output_names, with_hidden: bool, torch, progress: bool) -> list[dict]:
    """The teacher's outputs for every training example, computed once (fp16 to halve memory)."""
    cache: list[dict] = []
    bar = _bar(math.ceil(len(train_set) / 128), "teacher outputs", progress)
    with torch.no_grad():
        for start in range(0, len(train_set), 128):
            chunk = train_set[start:start + 128]
            batch = collate([{k: e[k] for k in ("input_ids", "attention_mask")} for e in chunk], torch)
            raw = teacher(batch["input_ids"], batch["attention_mask"],
                          **({"return_hidden": True} if with_hidden else {}))
            outputs = _outputs_dict(raw[:-1] if with_hidden else raw, output_names)
            if with_hidden:
                outputs["hidden"] = raw[-1]
            for row, example in enumerate(chunk):
                length = len(example["input_ids"])
                cache.append({k: (v[row, :length] if v.ndim == 3 else v[row]).to(torch.float16)
                              for k, v in outputs.items()})
            bar.update(1)
    bar.close()
    return cache


def _cached_batch(cache, indices, name, shape, torch):
    values = [cache[i][name] for i in indices]
    # Outside any bf16 autocast the step runs under: the targets are float32 data, and CPU autocast
    # refuses to stack the cache's float16 tensors.
    with torch.autocast("cpu", enabled=False):
        if values[0].ndim == 1:
            return torch.stack(values).float()
        out = torch.zeros(shape, dtype=torch.float32)
        for row, v in enumerate(values):
            out[row, :v.shape[0]] = v.float()
        return out


def _save_checkpoint(folder: Path, model, projection, optimizer, scheduler, generator, state, best_state,
                     torch) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".tmp"
    tmp.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "last.safetensors"))
    if best_state is not None:
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                "projection": projection.state_dict() if projection is not None else None,
                "state": json.dumps(state)}, tmp / "trainer_state.pt")
    for path in tmp.iterdir():
        os.replace(path, folder / path.name)
    tmp.rmdir()


def _load_checkpoint(folder: Path, model, projection, optimizer, scheduler, generator, torch) -> dict:
    """Restore a checkpoint; what is in it came from disk, so every way it can be wrong is an InputError.

    Raises:
        InputError: weights that are not safetensors or do not fit, a trainer state that is not a
            weights-only torch file (a pickle that would run code is refused, never run) or lacks fields.
    """
    from .. import safeio
    from .persist import read_safetensors

    def broken(reason: str) -> InputError:
        return InputError(f"checkpoint {folder} {reason}; delete the folder to train from the start",
                          field=str(folder))

    try:
        model.load_state_dict(read_safetensors(folder / "last.safetensors", what="checkpoint"))
    except RuntimeError as exc:
        raise broken(f"does not fit this model ({exc})") from None
    state_path = folder / "trainer_state.pt"
    safeio.check_regular(state_path, what="checkpoint", error=lambda reason: broken(f"trainer_state.pt {reason}"))
    try:
        saved = torch.load(state_path, weights_only=True)  # never unpickle code
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... on hostile files
        raise broken(f"trainer_state.pt cannot be read safely ({type(exc).__name__}: "
                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    try:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])  # dropout continues as if never interrupted
        if projection is not None and saved["projection"] is not None:
            projection.load_state_dict(saved["projection"])
        # The best score starts at -inf, which json writes as -Infinity.
        state = safeio.loads_json(saved["state"], what="trainer state", allow_nan=True, error=broken)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise broken(f"trainer_state.pt does not hold a trainer state ({type(exc).__name__}: {exc})") from None
    kinds = {"epoch": int, "stale": int, "best": (int, float), "history": list}
    if not isinstance(state, dict) or not all(isinstance(state.get(k), t) for k, t in kinds.items()) \
            or state["epoch"] < 0:
        raise broken("trainer_state.pt does not hold a trainer state (epoch, best, stale, history)")
    return state
