"""Gradients on the workload's data for first-order Taylor importance, and per-layer gate gradients.

Taylor importance (Molchanov et al., 2019) estimates how much the loss changes when weights go
to zero from w · ∂L/∂w. For a whole layer, zeroing its weights is not what removing it does (a
post-LayerNorm BERT layer still normalises), so each layer's output is rewritten, during these
passes only, as x + g · (layer(x) − x) with a gate g = 1: removing the layer is g → 0, and
|∂L/∂g| is the first-order estimate of what that costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError


def _torch():
    from ..distill.models import _torch as load

    return load()[0]


def encoder_loss(model, batch, *, output_names: Sequence[str] | None, label_map: Mapping[str, str]):
    """Cross-entropy of every head against its labels, or against the model's own predictions where
    the examples have none (pseudo-labels: the gradient then says what keeps today's answers)."""
    torch = _torch()
    from ..distill.trainer import _outputs_dict
    from ..tasks import IGNORE

    raw = model(batch["input_ids"], batch["attention_mask"])
    if output_names is None:
        raw = raw if isinstance(raw, (tuple, list)) else (raw,)
        output_names = [f"output_{i}" for i in range(len(raw))]
    outputs = _outputs_dict(raw, output_names)
    loss = 0.0
    for name in output_names:
        logits = outputs[name]
        labels = batch.get(label_map.get(name, ""))
        if labels is None:
            labels = logits.detach().argmax(-1)
            if logits.ndim == 3:
                labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE)
        loss = loss + torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        labels.reshape(-1).long(), ignore_index=IGNORE)
    return loss


def causal_lm_loss(model, batch):
    """Next-token cross-entropy over the real tokens of a batch (a decoder's own training loss)."""
    torch = _torch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                                             ignore_index=-100)


def accumulate_gradients(model, layers, data: Sequence[Mapping[str, Any]], loss_fn, *, batches: int,
                         batch_size: int) -> list[float]:
    """Sum ∂L/∂w into every parameter's `.grad` over up to `batches` batches of `data`, and return
    |∂L/∂g| for a gate on each of `layers` (see the module docstring).

    The model runs in eval mode (no dropout), so the same data gives the same scores.

    Raises:
        InputError: no data.
    """
    torch = _torch()
    from ..distill.trainer import collate

    if not data:
        raise InputError("Taylor importance needs data (training examples with input_ids and attention_mask); "
                         "pass data= or choose importance='magnitude'", field="data")
    gates = [torch.ones((), requires_grad=True) for _ in layers]

    def gated(gate):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs.get("hidden_states")
            first = output[0] if isinstance(output, tuple) else output
            mixed = x + gate * (first - x)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed
        return hook

    handles = [layer.register_forward_hook(gated(g), with_kwargs=True) for layer, g in zip(layers, gates)]
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for start in range(0, min(len(data), batches * batch_size), batch_size):
            chunk = data[start:start + batch_size]
            keys = [k for k in chunk[0] if all(k in e for e in chunk)]
            loss_fn(model, collate([{k: e[k] for k in keys} for e in chunk], torch)).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [abs(float(g.grad)) if g.grad is not None else 0.0 for g in gates]


def layer_magnitude(layer) -> float:
    """Data-free score of a layer: the root-mean-square of its Linear weights."""
    torch = _torch()
    weights = [m.weight.detach() for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    total = sum(float((w ** 2).sum()) for w in weights)
    count = sum(w.numel() for w in weights)
    return (total / max(1, count)) ** 0.5
