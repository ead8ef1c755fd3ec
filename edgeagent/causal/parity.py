"""Task-level parity of an exported decoder against transformers.

Three kinds of check, all through ONNX Runtime on the exported file:

- `prefill`: a left-padded batch of every prompt with an empty cache; logits at the real
  (unpadded) positions and every present key/value against transformers'.
- `decode`: then N single-token steps on the same batch, each side on its own cache, both fed
  the token transformers ranks first (so an early near-tie cannot derail the comparison);
  logits and the grown cache at every step.
- `greedy`: each prompt alone, greedy decoding for M tokens on both sides; the token ids must be
  identical. The report gives the first divergence and transformers' top-1/top-2 margin there,
  so a genuine near-tie is told apart from a broken export.

Logits at padded query positions are not compared: a padded row attends to nothing, and what a
runtime writes there (transformers gives 0 or NaN depending on the kernel) is never read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PROMPTS = (
    "Turn on the kitchen lights and set them to 40 percent.",
    "What is the weather like in Paris today?",
    "Write a haiku about a robot that",
    "The capital of France is",
)
DEFAULT_DECODE_STEPS = 16
DEFAULT_GREEDY_TOKENS = 16
DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-3

# (input_ids, attention_mask, position_ids, past [k0, v0, k1, v1, ...]) → (logits, present)
Step = Callable[[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]],
                tuple[np.ndarray, list[np.ndarray]]]


def kv_names(num_layers: int) -> tuple[list[str], list[str]]:
    """The contract's past and present names, in [key, value] per layer order."""
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, present


def empty_past(batch: int, num_layers: int, num_kv_heads: int, head_dim: int) -> list[np.ndarray]:
    """The prefill step's cache: `[batch, kv_heads, 0, head_dim]` per key and value."""
    return [np.zeros((batch, num_kv_heads, 0, head_dim), np.float32) for _ in range(2 * num_layers)]


def left_pad(token_lists: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into (input_ids, attention_mask), both int64."""
    width = max(len(t) for t in token_lists)
    ids = np.full((len(token_lists), width), pad_id, np.int64)
    mask = np.zeros((len(token_lists), width), np.int64)
    for row, tokens in enumerate(token_lists):
        if tokens:
            ids[row, width - len(tokens):] = tokens
            mask[row, width - len(tokens):] = 1
    return ids, mask


def position_ids(mask: np.ndarray) -> np.ndarray:
    """`cumsum(mask) - 1` clipped at 0, as Hugging Face generate computes them."""
    return np.clip(np.cumsum(mask, axis=-1) - 1, 0, None).astype(np.int64)


def encode_prompts(ir_folder: str | os.PathLike, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt with the IR's tokenizer.json (needs `tokenizers`, not transformers)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        from ..errors import BackendUnavailable

        raise BackendUnavailable("encoding prompts needs tokenizers: pip install tokenizers") from None
    tokenizer = Tokenizer.from_file(str(Path(ir_folder) / "tokenizer.json"))
    return [tokenizer.encode(p).ids for p in prompts]


def ort_step(model_path, num_layers: int, *, session_options=None) -> Step:
    """A Step over an ONNX decoder run by ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), sess_options=session_options,
                                   providers=["CPUExecutionProvider"])
    past_names, present_names = kv_names(num_layers)
    outputs = ["logits", *present_names]

    def step(ids, mask, pos, past):
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                 **dict(zip(past_names, past))}
        logits, *present = session.run(outputs, feeds)
        return logits, present

    return step


def torch_step(model) -> Step:
    """A Step over a transformers causal LM, with the cache rebuilt from the arrays each call."""
    import torch
    from transformers import DynamicCache

    layers = model.config.num_hidden_layers

    def step(ids, mask, pos, past):
        pairs = [(torch.from_numpy(past[2 * i]), torch.from_numpy(past[2 * i + 1])) for i in range(layers)]
        cache = DynamicCache(ddp_cache_data=pairs, config=model.config) if past[0].shape[2] else \
            DynamicCache(config=model.config)
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        position_ids=torch.from_numpy(pos), past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys.numpy(), layer.values.numpy()]
        return out.logits.float().numpy(), present

    return step


def greedy(step: Step, prompt: Sequence[int], n_tokens: int, *, num_layers: int, num_kv_heads: int,
           head_dim: int) -> tuple[list[int], list[float]]:
    """Greedy-decode `n_tokens` after `prompt` (batch 1, no stop); return tokens and the
    top-1/top-2 logit margin at each step."""
    ids = np.asarray([prompt], np.int64)
    mask = np.ones_like(ids)
    pos = position_ids(mask)
    past = empty_past(1, num_layers, num_kv_heads, head_dim)
    tokens, margins = [], []
    for _ in range(n_tokens):
        logits, past = step(ids, mask, pos, past)
        last = logits[0, -1].astype(np.float64)
        top2 = np.partition(last, -2)[-2:]
        token = int(last.argmax())
        tokens.append(token)
        margins.append(float(top2[1] - top2[0]))
        ids = np.asarray([[token]], np.int64)
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        pos = pos[:, -1:] + 1
    return tokens, margins


def compare(check: str, output: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float,
            **where: Any) -> dict[str, Any]:
    """One report row: shape, max abs/rel difference, argmax agreement (logits), ok."""
    row: dict[str, Any] = {"check": check, "output": output, **where}
    if ref.shape != got.shape:
        return {**row, "ok": False, "reason": f"shape {list(got.shape)} instead of {list(ref.shape)}"}
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    finite = bool(np.isfinite(got).all() and np.isfinite(ref).all())
    row["max_abs_diff"] = float(diff.max()) if diff.size else 0.0
    row["max_rel_diff"] = float((diff / (np.abs(ref) + 1e-6)).max()) if diff.size else 0.0
    if output == "logits" and ref.size:
        row["argmax_agreement"] = float((ref.argmax(-1) == got.argmax(-1)).mean())
    row["ok"] = finite and bool(np.allclose(got, ref, atol=atol, rtol=rtol))
    if not finite:
        row["reason"] = "NaN or Inf"
    return row


def check_decoder_parity(onnx_step: Step, reference: Step, prompts: Sequence[Sequence[int]], *,
                         num_layers: int, num_kv_heads: int, head_dim: int, pad_id: int,
                         decode_steps: int = DEFAULT_DECODE_STEPS,
                         greedy_tokens: int = DEFAULT_GREEDY_TOKENS,
                         atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> list[dict[str, Any]]:
    """Run the prefill, decode and greedy checks; return one row per comparison.

    Args:
        onnx_step: the exported model (see `ort_step`).
        reference: transformers' model (see `torch_step`).
        prompts: token id lists, at least one, none empty.
        num_layers, num_kv_heads, head_dim: the cache layout.
        pad_id: the id left padding uses.
        decode_steps: single-token steps after the prefill (default 16).
        greedy_tokens: tokens generated per prompt in the greedy check (default 16).
        atol, rtol: tolerances on logits and cache, as numpy.allclose (defaults 1e-3, 1e-3).
    """
    layout = {"num_layers": num_layers, "num_kv_heads": num_kv_heads, "head_dim": head_dim}
    report: list[dict[str, Any]] = []
    ids, mask = left_pad(prompts, pad_id)
    pos = position_ids(mask)
    past_ref = past_got = empty_past(len(prompts), **layout)
    real = mask.astype(bool)
    shapes = {"batch": int(ids.shape[0]), "sequence": int(ids.shape[1]), "past_sequence": 0}
    ref_logits, past_ref = reference(ids, mask, pos, past_ref)
    got_logits, past_got = onnx_step(ids, mask, pos, past_got)
    report.append(compare("prefill", "logits", ref_logits[real], got_logits[real], atol, rtol, shapes=shapes))
    report.append(_compare_cache("prefill", past_ref, past_got, mask, atol, rtol, shapes=shapes))
    for step in range(1, decode_steps + 1):
        token = ref_logits[:, -1].argmax(-1).astype(np.int64)[:, None]
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        pos = pos[:, -1:] + 1
        shapes = {"batch": int(token.shape[0]), "sequence": 1, "past_sequence": int(past_ref[0].shape[2])}
        ref_logits, past_ref = reference(token, mask, pos, past_ref)
        got_logits, past_got = onnx_step(token, mask, pos, past_got)
        report.append(compare("decode", "logits", ref_logits, got_logits, atol, rtol, step=step, shapes=shapes))
        report.append(_compare_cache("decode", past_ref, past_got, mask, atol, rtol, step=step, shapes=shapes))
    for index, prompt in enumerate(prompts):
        ref_tokens, margins = greedy(reference, prompt, greedy_tokens, **layout)
        got_tokens, _ = greedy(onnx_step, prompt, greedy_tokens, **layout)
        row: dict[str, Any] = {"check": "greedy", "output": "tokens", "prompt": index,
                               "ok": ref_tokens == got_tokens, "reference": ref_tokens, "exported": got_tokens}
        if not row["ok"]:
            first = next(i for i, (a, b) in enumerate(zip(ref_tokens, got_tokens)) if a != b)
            row["first_divergence"] = first
            row["reference_margin"] = margins[first]
            row["reason"] = (f"token {first} differs ({got_tokens[first]} instead of {ref_tokens[first]}; "
                             f"transformers' top-1/top-2 margin there {margins[first]:.3g})")
        report.append(row)
    return report


def _compare_cache(check, ref: list[np.ndarray], got: list[np.ndarray], mask: np.ndarray, atol, rtol,
                   **where):
    """Compare the caches at real positions: past layer 0, a padded position's key and value
    come from a padded query's attention output, which no one reads."""
    if len(ref) != len(got):
        return {"check": check, "output": "present", **where, "ok": False,
                "reason": f"{len(got)} cache tensors instead of {len(ref)}"}
    real = mask.astype(bool)

    def select(t: np.ndarray) -> np.ndarray:  # [batch, heads, total, dim] → [positions, heads, dim]
        return t.transpose(0, 2, 1, 3)[real] if t.ndim == 4 and t.shape[2] == real.shape[1] else t

    rows = [compare(check, "present", select(r), select(g), atol, rtol, **where) for r, g in zip(ref, got)]
    worst = max(rows, key=lambda r: (not r["ok"], r.get("max_abs_diff", float("inf"))))
    return {**worst, "ok": all(r["ok"] for r in rows),
            "layer": rows.index(worst) // 2, "kind": ("key", "value")[rows.index(worst) % 2]}


def summarize(report: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst differences per check kind, for ir.json and error messages."""
    summary: dict[str, Any] = {}
    for kind in ("prefill", "decode"):
        rows = [r for r in report if r["check"] == kind]
        if rows:
            summary[f"{kind}_max_abs_diff"] = max(r.get("max_abs_diff", float("inf")) for r in rows)
            agreement = [r["argmax_agreement"] for r in rows if "argmax_agreement" in r]
            if agreement:
                summary[f"{kind}_argmax_agreement"] = min(agreement)
    greedy_rows = [r for r in report if r["check"] == "greedy"]
    summary["greedy_identical"] = f"{sum(r['ok'] for r in greedy_rows)}/{len(greedy_rows)}"
    summary["checks"] = len(report)
    summary["failed"] = sum(not r["ok"] for r in report)
    return summary
