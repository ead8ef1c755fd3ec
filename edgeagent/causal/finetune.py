"""Fine-tuning a decoder into a tool caller, and distilling it into a smaller decoder (issue 21).

- `finetune_causal_lm(source, out, ...)`: a causal LM (anything `load_causal_lm` takes: a
  Hugging Face folder or id, a `.gguf`, `module:function`) trained to answer a workload's
  utterances with their tool call, the text `call_text` writes — the call the constrained
  decoder then reproduces token for token. The prompt is the task's chat (its system prompt,
  then the utterance) rendered by the model's own chat template, exactly as the generation loop
  renders it; the loss is cross-entropy on the call's tokens and the end-of-turn token only.
  LoRA adapters through `peft` (merged into the weights before saving) or full fine-tuning.
- `distill_causal_lm(teacher, out, ...)`: a student with `num_layers` of the teacher's layers
  (evenly spaced, or chosen), its embeddings, norm and head copied, trained on token-level soft
  targets, α·T²·KL(teacher ‖ student) + (1 − α)·CE, with an optional hidden-state MSE between
  each student layer and the teacher layer it was copied from.

Both write a plain Hugging Face folder (`export_causal_lm` takes it) with `training.json`: the
recipe, the data's fingerprint, whether bf16 autocast ran and why, the loss per epoch, the
teacher-forced dev loss and call-token accuracy, tokens per second. Same seed, same data, same
recipe → the same weights. Training checkpoints into `checkpoint_dir` every `checkpoint_every`
optimizer steps; `resume=True` continues from the last one and ends with the weights an
uninterrupted run would have.

bf16: `bf16="auto"` runs the forward pass under `torch.autocast("cpu", torch.bfloat16)` where
the CPU has AVX512-BF16 or AMX-BF16 (master weights, optimizer and loss stay float32);
`benchmarks/causal_training.py` measures both side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, InputError
from ..hostinfo import bf16_support, resolve_bf16
from ..log import log

TRAINING_FILE = "training.json"
IGNORE = -100  # the label torch's cross-entropy skips
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_MAX_LENGTH = 320  # prompt + call tokens; longer examples are skipped and counted
DEV_EXAMPLES = 64


@dataclass(frozen=True)
class CallExample:
    """One utterance and the tool call it must get, tokenized for training.

    Attributes:
        input_ids: the rendered chat prompt's tokens, then the call's tokens and end of turn.
        prompt_tokens: how many of `input_ids` are the prompt (no loss on them).
    """

    input_ids: tuple[int, ...]
    prompt_tokens: int


def tool_call_data(workload: str = "ha-intents", split: str = "train", *, max_examples: int | None = None,
                   seed: int = 0) -> list[dict[str, Any]]:
    """A workload's labelled utterances for a generative tool caller: {text, intent, slots, target}.

    For ha-intents: the split's template sentences and, for train and dev, the phrasings and
    not-understood negatives beyond the templates (`robust_split`), shuffled with `seed`; the
    first `max_examples` of the shuffle (all by default). `target` is `ha_tools.call_text`.

    Raises:
        InputError: a workload with no tool-call data, an unknown split.
    """
    import random

    if workload != "ha-intents":
        raise InputError(f"workload {workload!r} has no tool-call data; text-generation training "
                         "supports: ha-intents", field="workload")
    from ..workloads import ha_intents, ha_tools

    rows = list(ha_intents.generate(split)) + list(ha_intents.robust_split(split))
    random.Random(f"{seed}:causal:{split}").shuffle(rows)
    if max_examples is not None:
        if type(max_examples) is not int or max_examples < 1:
            raise InputError(f"max_examples must be a positive integer, got {max_examples!r:.40}",
                             field="max_examples")
        rows = rows[:max_examples]
    return [{"text": e.text, "intent": e.intent, "slots": e.slots, "target": ha_tools.call_text(e.intent, e.slots)}
            for e in rows]


def data_fingerprint(rows: Sequence[Mapping[str, Any]]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["text"], row["target"]], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:16]


def encode_calls(tokenizer, rows: Sequence[Mapping[str, Any]], messages: Callable[[str], list],
                 *, max_length: int) -> tuple[list[CallExample], int]:
    """Tokenize rows as the generation loop will see them; return the examples and how many were
    skipped for exceeding `max_length` tokens.

    The prompt is rendered by the tokenizer's chat template with the generation prompt and
    encoded without added special tokens (the template writes them), as `generate` does; the
    target is the call's text followed by the end-of-turn (EOS) token.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no eos_token: a call could not end", field="tokenizer")
    examples, skipped = [], 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(messages(row["text"]), tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        target_ids = tokenizer.encode(row["target"], add_special_tokens=False) + [eos]
        ids = prompt_ids + target_ids
        if len(ids) > max_length:
            skipped += 1
            continue
        examples.append(CallExample(tuple(ids), len(prompt_ids)))
    return examples, skipped


def _collate(examples: Sequence[CallExample], pad_id: int, torch) -> dict[str, Any]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, e.prompt_tokens:n] = torch.tensor(e.input_ids[e.prompt_tokens:])
    # Only positions from the shortest prompt's last token on predict a call token: the LM head
    # (49,152 × 576 for SmolLM2) runs on those alone (transformers' logits_to_keep).
    keep = width - min(e.prompt_tokens for e in examples) + 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels[:, width - keep:], "keep": keep}


def call_logits(model, batch, **options):
    """The model's output on a batch, its logits only where they can predict a call token."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 logits_to_keep=batch["keep"], **options)


def _shifted(logits, labels):
    """Logits that predict each labelled token, and those tokens (next-token shift)."""
    return logits[:, :-1, :], labels[:, 1:]


def causal_ce(logits, labels, torch):
    predicted, target = _shifted(logits, labels)
    return torch.nn.functional.cross_entropy(predicted.float().reshape(-1, predicted.shape[-1]),
                                             target.reshape(-1), ignore_index=IGNORE)


def token_kd_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float, torch):
    """α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α)·CE, over the call's tokens."""
    s, target = _shifted(student_logits.float(), labels)
    t, _ = _shifted(teacher_logits.float(), labels)
    keep = target != IGNORE
    s, t = s[keep], t[keep]
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / temperature, -1), torch.log_softmax(t / temperature, -1),
                                    log_target=True, reduction="batchmean")
    ce = torch.nn.functional.cross_entropy(s, target[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


def _check_recipe(*, epochs: int, learning_rate: float, batch_size: int, seed: int, max_length: int,
                  checkpoint_every: int) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length),
                        ("checkpoint_every", checkpoint_every)):
        if type(value) is not int or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r:.40}", field=name)
    if type(seed) is not int:
        raise InputError(f"seed must be an integer, got {seed!r:.40}", field="seed")
    if not isinstance(learning_rate, (int, float)) or not 0 < learning_rate < 1:
        raise InputError(f"learning_rate must be in (0, 1), got {learning_rate!r:.40}", field="learning_rate")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; choose a new --out or delete it", field="out")


@dataclass
class _Run:
    """What one training run needs: the model, its trainable parameters and its loss."""

    model: Any
    loss: Callable[[Any, dict], Any]
    trainable: list[tuple[str, Any]]


def _train(run: _Run, examples: Sequence[CallExample], *, pad_id: int, epochs: int, learning_rate: float,
           batch_size: int, seed: int, use_bf16: bool, checkpoint_dir: Path | None, checkpoint_every: int,
           resume: bool, recipe_key: str, progress: bool) -> dict[str, Any]:
    """AdamW with linear warm-up and decay over seeded, reproducible batches; checkpoints and
    resumes. Returns the history (mean loss per epoch, tokens, seconds)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from tqdm import tqdm

    params = [p for _, p in run.trainable]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = -(-len(examples) // batch_size)
    total = steps_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 20), total)
    state = {"step": 0, "epoch_losses": [], "running": [0.0, 0], "tokens": 0, "seconds": 0.0}
    if checkpoint_dir is not None and resume and (checkpoint_dir / "trainer_state.pt").is_file():
        state = _load_checkpoint(checkpoint_dir, run, optimizer, scheduler, recipe_key, torch)
        log.info("resuming text-generation training at step %d of %d", state["step"], total)
    run.model.train()
    bar = tqdm(total=total, initial=state["step"], desc="text-generation training", unit="batch",
               disable=None if progress else True, leave=False)
    try:
        while state["step"] < total:
            epoch, within = divmod(state["step"], steps_per_epoch)
            order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed * 1009 + epoch))
            indices = order[within * batch_size:(within + 1) * batch_size].tolist()
            batch = _collate([examples[i] for i in indices], pad_id, torch)
            start = time.perf_counter()
            # Dropout (LoRA's) draws from the global generator: seed it per step so a resumed run
            # draws what the uninterrupted one drew.
            torch.manual_seed(seed * 1_000_003 + state["step"])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss = run.loss(run.model, batch)
            if not torch.isfinite(loss):
                raise InputError(f"the training loss became {loss.item()} at step {state['step']}; lower the "
                                 "learning rate", field="learning_rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["seconds"] += time.perf_counter() - start
            state["tokens"] += int(batch["attention_mask"].sum())
            state["running"][0] += float(loss.detach())
            state["running"][1] += 1
            state["step"] += 1
            bar.update(1)
            if state["step"] % steps_per_epoch == 0:
                state["epoch_losses"].append(state["running"][0] / max(1, state["running"][1]))
                state["running"] = [0.0, 0]
                log.info("text-generation training: epoch %d of %d, mean loss %.4f, %.0f tokens/s",
                         len(state["epoch_losses"]), epochs, state["epoch_losses"][-1],
                         state["tokens"] / max(state["seconds"], 1e-9))
            if checkpoint_dir is not None and (state["step"] % checkpoint_every == 0 or state["step"] == total):
                _save_checkpoint(checkpoint_dir, run, optimizer, scheduler, state, recipe_key, torch)
    finally:
        bar.close()
    run.model.eval()
    return {"epoch_losses": state["epoch_losses"], "steps": total, "train_tokens": state["tokens"],
            "train_seconds": state["seconds"],
            "tokens_per_second": state["tokens"] / state["seconds"] if state["seconds"] else None}


def _save_checkpoint(folder: Path, run: _Run, optimizer, scheduler, state: dict, recipe_key: str, torch) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp_weights, tmp_state = folder / "trainable.safetensors.tmp", folder / "trainer_state.pt.tmp"
    save_file({name: p.detach().contiguous() for name, p in run.trainable}, str(tmp_weights))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "state": json.dumps({**state, "recipe": recipe_key})}, tmp_state)
    # Weights first, then the state that points at them: a kill between the two renames leaves a
    # state that still matches the weights of the step before (both are replaced together below).
    os.replace(tmp_weights, folder / "trainable.safetensors")
    os.replace(tmp_state, folder / "trainer_state.pt")


def _load_checkpoint(folder: Path, run: _Run, optimizer, scheduler, recipe_key: str, torch) -> dict:
    """Restore a checkpoint; it came from disk, so every way it can be wrong is an InputError
    (a pickle that would run code is refused, never run)."""
    from .. import safeio
    from ..distill.persist import read_safetensors

    def broken(reason: str) -> InputError:
        return InputError(f"checkpoint {folder} {reason}; delete the folder to train from the start",
                          field=str(folder))

    state_path = folder / "trainer_state.pt"
    safeio.check_regular(state_path, what="checkpoint", error=lambda reason: broken(f"trainer_state.pt {reason}"))
    try:
        saved = torch.load(state_path, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... on hostile files
        raise broken(f"trainer_state.pt cannot be read safely ({type(exc).__name__})") from None
    if not isinstance(saved, dict) or not {"optimizer", "scheduler", "state"} <= set(saved):
        raise broken("trainer_state.pt lacks optimizer, scheduler or state")
    state = safeio.loads_json(saved["state"], what="trainer state", error=broken)
    if not isinstance(state, dict) or state.get("recipe") != recipe_key:
        raise broken("was written by another recipe, model or data set")
    weights = read_safetensors(folder / "trainable.safetensors", what="checkpoint")
    names = {name for name, _ in run.trainable}
    if set(weights) != names:
        raise broken("holds other parameters than this model trains")
    try:
        with torch.no_grad():
            for name, param in run.trainable:
                param.copy_(weights[name])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise broken(f"does not fit this model ({type(exc).__name__}: {str(exc)[:200]})") from None
    state.pop("recipe", None)
    required = {"step": int, "epoch_losses": list, "running": list, "tokens": int, "seconds": (int, float)}
    if any(not isinstance(state.get(k), t) for k, t in required.items()):
        raise broken("has a trainer state with missing or mistyped fields")
    return state


def dev_scores(model, examples: Sequence[CallExample], *, pad_id: int, use_bf16: bool,
               batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced dev loss and call-token accuracy (the share of the call's tokens the model
    ranks first given the gold prefix): cheap, and it needs no export."""
    import torch

    loss_sum, tokens, correct = 0.0, 0, 0
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
        for start in range(0, len(examples), batch_size):
            batch = _collate(examples[start:start + batch_size], pad_id, torch)
            logits = call_logits(model, batch).logits.float()
            predicted, target = _shifted(logits, batch["labels"])
            keep = target != IGNORE
            loss_sum += float(torch.nn.functional.cross_entropy(predicted[keep], target[keep], reduction="sum"))
            correct += int((predicted[keep].argmax(-1) == target[keep]).sum())
            tokens += int(keep.sum())
    return {"dev_loss": loss_sum / max(1, tokens), "dev_call_token_accuracy": correct / max(1, tokens),
            "dev_examples": len(examples)}


def _train_scored(run: _Run, train: Sequence[CallExample], dev: Sequence[CallExample], *, pad_id: int,
                  use_bf16: bool, **options: Any) -> dict[str, Any]:
    """`_train`, with the teacher-forced dev scores before and after it (dev_before, dev_after)."""
    def score() -> dict[str, float]:
        return dev_scores(run.model, dev, pad_id=pad_id, use_bf16=use_bf16) if dev else {}

    before = score()
    history = _train(run, train, pad_id=pad_id, use_bf16=use_bf16, **options)
    return {"dev_before": before, "dev_after": score(), **history}


def _resolve_task(task: Any, workload: str) -> Any:
    """The TextGenerationTask whose chat the model is trained on (default: the workload's)."""
    if task is None:
        if workload != "ha-intents":
            raise InputError(f"workload {workload!r} has no generative task; pass task=", field="workload")
        from ..workloads.ha_tools import generative_task

        task = generative_task()
    if not callable(getattr(task, "messages", None)):
        raise InputError("task must be a TextGenerationTask (it renders the chat the model is asked)", field="task")
    return task


def _prepare(tokenizer, task, workload: str, *, max_examples: int | None, seed: int, max_length: int):
    rows = tool_call_data(workload, "train", max_examples=max_examples, seed=seed)
    dev_rows = tool_call_data(workload, "dev", max_examples=DEV_EXAMPLES, seed=seed)
    train, skipped = encode_calls(tokenizer, rows, task.messages, max_length=max_length)
    dev, _ = encode_calls(tokenizer, dev_rows, task.messages, max_length=max_length)
    if not train:
        raise InputError(f"every training example is longer than max_length={max_length} tokens; raise "
                         "max_length (the model's context permitting)", field="max_length")
    return rows, train, dev, skipped


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _finish(model, tokenizer, out: Path, record: dict[str, Any]) -> Path:
    """Write the folder under a staging name, then move it into place: nothing half-written."""
    from .sources import write_hf_folder

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_hf_folder(model, tokenizer, staging)
    (staging / TRAINING_FILE).write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n",
                                         encoding="utf-8")
    if out.exists():
        out.rmdir()  # _check_out allowed only an empty folder
    os.replace(staging, out)
    return out


def finetune_causal_lm(source: str | os.PathLike, out: str | os.PathLike, *, workload: str = "ha-intents",
                       task: Any = None, lora: bool = True, lora_rank: int = 16, lora_alpha: int = 32,
                       lora_dropout: float = 0.05, epochs: int = 1, learning_rate: float = 2e-4,
                       batch_size: int = 8, max_examples: int | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                       seed: int = 0, bf16: bool | str = "auto", checkpoint_dir: str | os.PathLike | None = None,
                       checkpoint_every: int = 50, resume: bool = False, progress: bool = True) -> Path:
    """Fine-tune a causal LM to answer a workload's utterances with their tool call.

    Args:
        source: anything `load_causal_lm` takes (SmolLM2's GGUF, a Hugging Face folder or id, ...).
        out: the folder to write (new or empty): a Hugging Face folder and training.json.
        workload: where the data comes from (default ha-intents: templates and phrasings).
        task: the TextGenerationTask whose chat the model is asked (default: the workload's).
        lora: LoRA adapters on every projection (peft), merged before saving (default); False
            trains every weight.
        lora_rank: the adapters' rank (default 16).
        lora_alpha: the adapters' scale numerator (default 32).
        lora_dropout: dropout on the adapters' input (default 0.05).
        epochs: passes over the data (default 1; AdamW, linear warm-up and decay).
        learning_rate: the peak learning rate (default 2e-4).
        batch_size: examples per step (default 8).
        max_examples: train on the first N of the seeded shuffle (default all).
        max_length: examples longer than this many tokens are skipped and counted.
        seed: data order, adapter initialisation and dropout.
        bf16: "auto" (native bf16 CPUs only), True or False: autocast of the forward pass.
        checkpoint_dir: where resumable checkpoints go (default: none).
        checkpoint_every: steps between checkpoints (default 50).
        resume: continue from the newest checkpoint in checkpoint_dir.
        progress: show a progress bar.

    Returns:
        `out`.

    Raises:
        InputError: a recipe value out of range, `out` not empty, no usable example, a
            checkpoint from another recipe or that cannot be read safely.
        ModelRejected: as `load_causal_lm`, for the source (a file fails its check).
        UnsupportedModel: as `load_causal_lm`, for the source (an unsupported architecture).
        BackendUnavailable: torch, transformers or peft is missing.
    """
    from .sources import load_causal_lm

    out = Path(out)
    _check_out(out)
    _check_recipe(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                  max_length=max_length, checkpoint_every=checkpoint_every)
    if lora and (type(lora_rank) is not int or lora_rank < 1 or not isinstance(lora_alpha, (int, float))
                 or lora_alpha <= 0 or not 0 <= lora_dropout < 1):
        raise InputError("lora_rank must be a positive integer, lora_alpha positive and lora_dropout in [0, 1)",
                         field="lora_rank")
    use_bf16, why_bf16 = resolve_bf16(bf16)
    task = _resolve_task(task, workload)
    import torch

    loaded = load_causal_lm(source)
    model, tokenizer = loaded.model, loaded.tokenizer
    rows, train, dev, skipped = _prepare(tokenizer, task, workload, max_examples=max_examples, seed=seed,
                                         max_length=max_length)
    recipe = {"lora": bool(lora), "lora_rank": lora_rank if lora else None, "lora_alpha": lora_alpha if lora else None,
              "lora_dropout": lora_dropout if lora else None, "epochs": epochs, "learning_rate": learning_rate,
              "batch_size": batch_size, "max_examples": max_examples, "max_length": max_length, "seed": seed,
              "bf16": use_bf16}
    recipe_key = json.dumps([recipe, loaded.source_sha256, data_fingerprint(rows)], sort_keys=True)
    torch.manual_seed(seed)
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise BackendUnavailable("LoRA fine-tuning needs peft: pip install -c constraints.txt "
                                     "'edgeagent[train]' (or pass lora=False to train every weight)") from None

        names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        targets = sorted(set(LORA_TARGETS) & names)
        if not targets:
            raise InputError(f"the model has none of the projections LoRA adapts ({', '.join(LORA_TARGETS)}); "
                             "pass lora=False", field="lora")
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    else:
        model.requires_grad_(True)
    # Tied embeddings appear once in named_parameters: one weight, trained once.
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def loss(m, batch):
        return causal_ce(call_logits(m, batch).logits, batch["labels"], torch)

    scores = _train_scored(_Run(model, loss, trainable), train, dev, pad_id=_pad_id(tokenizer), epochs=epochs,
                           learning_rate=learning_rate, batch_size=batch_size, seed=seed, use_bf16=use_bf16,
                           checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
                           checkpoint_every=checkpoint_every, resume=resume, recipe_key=recipe_key,
                           progress=progress)
    if lora:
        model = model.merge_and_unload()
    record = {"kind": "generative-teacher", "source": loaded.source, "source_sha256": loaded.source_sha256,
              "workload": workload, "task": task.to_json() if hasattr(task, "to_json") else None,
              "recipe": recipe, "bf16": {"used": use_bf16, "why": why_bf16, **bf16_support()},
              "trainable_parameters": sum(p.numel() for _, p in trainable),
              "data": {"train_examples": len(train), "skipped_too_long": skipped,
                       "fingerprint": data_fingerprint(rows)},
              **scores}
    return _finish(model, tokenizer, out, record)


def student_layers(teacher_layers: int, num_layers: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included: 10 of 30 → 0, 3, 6, ..., 29."""
    if num_layers == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (num_layers - 1)) for i in range(num_layers)]


def student_from_teacher(teacher, layers: Sequence[int]):
    """A decoder of the teacher's family with the chosen layers, embeddings, norm and head copied."""
    import copy

    import torch
    import transformers

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in layers]
    student = getattr(transformers, type(teacher).__name__)(config)
    source = teacher.state_dict()
    rename = {f"model.layers.{i}.": f"model.layers.{j}." for j, i in enumerate(layers)}
    state = {}
    for key, value in source.items():
        if key.startswith("model.layers."):
            prefix = ".".join(key.split(".")[:3]) + "."
            if prefix not in rename:
                continue
            key = rename[prefix] + key[len(prefix):]
        state[key] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    # A tied head is the embedding itself; nothing else may be missing.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise InputError(f"the teacher's weights do not fit a {len(layers)}-layer student: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}", field="teacher")
    with torch.no_grad():
        if getattr(config, "tie_word_embeddings", False):
            student.tie_weights()
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.eval()


def distill_causal_lm(teacher: str | os.PathLike, out: str | os.PathLike, *, num_layers: int = 10,
                      layers: Sequence[int] | None = None, alpha: float = 0.5, temperature: float = 2.0,
                      hidden_weight: float = 0.0, workload: str = "ha-intents", task: Any = None, epochs: int = 1,
                      learning_rate: float = 1e-4, batch_size: int = 8, max_examples: int | None = None,
                      max_length: int = DEFAULT_MAX_LENGTH, seed: int = 0, bf16: bool | str = "auto",
                      checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 50,
                      resume: bool = False, progress: bool = True) -> Path:
    """Distil a decoder student from a (fine-tuned) teacher on a workload's tool calls.

    Args:
        teacher: anything `load_causal_lm` takes (usually `finetune_causal_lm`'s folder).
        out: the folder to write (new or empty): the student's Hugging Face folder and training.json.
        num_layers: the student's depth (default 10), initialised from evenly spaced teacher layers.
        layers: the teacher layers to copy instead (sorted, distinct, `num_layers` of them).
        alpha: the soft targets' share of the loss α·T²·KL + (1 − α)·CE (default 0.5).
        temperature: the softmax temperature T of the soft targets (default 2.0).
        hidden_weight: weight of the MSE between each student layer's output and its teacher
            layer's (default 0: off; the widths always match).

    The other arguments are as `finetune_causal_lm`'s (the student trains every weight).

    Raises:
        InputError: a recipe value out of range, a student as deep as the teacher, bad layers.
        ModelRejected: as `load_causal_lm`, for the teacher.
        UnsupportedModel: as `load_causal_lm`, for the teacher.
    """
    from .sources import load_causal_lm

    out = Path(out)
    _check_out(out)
    _check_recipe(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                  max_length=max_length, checkpoint_every=checkpoint_every)
    if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha!r:.40}", field="alpha")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature!r:.40}", field="temperature")
    if not isinstance(hidden_weight, (int, float)) or hidden_weight < 0:
        raise InputError(f"hidden_weight must be 0 or more, got {hidden_weight!r:.40}", field="hidden_weight")
    use_bf16, why_bf16 = resolve_bf16(bf16)
    task = _resolve_task(task, workload)
    import torch

    loaded = load_causal_lm(teacher)
    teacher_model, tokenizer = loaded.model, loaded.tokenizer
    depth = teacher_model.config.num_hidden_layers
    if layers is None:
        if type(num_layers) is not int or not 1 <= num_layers < depth:
            raise InputError(f"num_layers must be from 1 to {depth - 1} (the teacher has {depth}), got "
                             f"{num_layers!r:.40}", field="num_layers")
        layers = student_layers(depth, num_layers)
    else:
        layers = list(layers)
        if (not layers or any(type(i) is not int or not 0 <= i < depth for i in layers)
                or layers != sorted(set(layers)) or len(layers) >= depth):
            raise InputError(f"layers must be distinct, increasing teacher layers in [0, {depth}) and fewer than "
                             f"{depth}, got {layers!r:.80}", field="layers")
    rows, train, dev, skipped = _prepare(tokenizer, task, workload, max_examples=max_examples, seed=seed,
                                         max_length=max_length)
    recipe = {"layers": layers, "alpha": alpha, "temperature": temperature, "hidden_weight": hidden_weight,
              "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size,
              "max_examples": max_examples, "max_length": max_length, "seed": seed, "bf16": use_bf16}
    recipe_key = json.dumps([recipe, loaded.source_sha256, data_fingerprint(rows)], sort_keys=True)
    torch.manual_seed(seed)
    student = student_from_teacher(teacher_model, layers)
    teacher_model.eval().requires_grad_(False)
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]

    def loss(m, batch):
        with torch.no_grad():
            t = call_logits(teacher_model, batch, output_hidden_states=hidden_weight > 0)
        s = call_logits(m, batch, output_hidden_states=hidden_weight > 0)
        value = token_kd_loss(s.logits, t.logits, batch["labels"], temperature=temperature, alpha=alpha, torch=torch)
        if hidden_weight > 0:
            # hidden_states[k + 1] is layer k's output; the last entries are after the final norm.
            keep = batch["attention_mask"].bool()
            pairs = [(s.hidden_states[j + 1], t.hidden_states[i + 1]) for j, i in enumerate(layers[:-1])]
            pairs.append((s.hidden_states[-1], t.hidden_states[-1]))
            value = value + hidden_weight * sum(torch.nn.functional.mse_loss(a.float()[keep], b.float()[keep])
                                                for a, b in pairs) / len(pairs)
        return value

    scores = _train_scored(_Run(student, loss, trainable), train, dev, pad_id=_pad_id(tokenizer), epochs=epochs,
                           learning_rate=learning_rate, batch_size=batch_size, seed=seed, use_bf16=use_bf16,
                           checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
                           checkpoint_every=checkpoint_every, resume=resume, recipe_key=recipe_key,
                           progress=progress)
    teacher_dev = dev_scores(teacher_model, dev, pad_id=_pad_id(tokenizer), use_bf16=use_bf16) if dev else {}
    record = {"kind": "generative-student", "teacher": loaded.source, "teacher_sha256": loaded.source_sha256,
              "teacher_layers": depth, "workload": workload,
              "task": task.to_json() if hasattr(task, "to_json") else None, "recipe": recipe,
              "bf16": {"used": use_bf16, "why": why_bf16, **bf16_support()},
              "parameters": sum(p.numel() for p in student.parameters()),
              "teacher_parameters": sum(p.numel() for p in teacher_model.parameters()),
              "data": {"train_examples": len(train), "skipped_too_long": skipped,
                       "fingerprint": data_fingerprint(rows)},
              "teacher_dev": teacher_dev, **scores}
    return _finish(student, tokenizer, out, record)
