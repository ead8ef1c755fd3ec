"""Structured pruning of generative decoders (transformers' Llama and Qwen2 families): FFN
neurons, grouped-query attention heads in whole KV groups, and whole layers.

With grouped-query attention every key/value head serves `num_attention_heads /
num_key_value_heads` query heads. Removing query heads inside a group would leave groups of
different sizes, which `repeat_kv` cannot express; removing a K/V head alone would orphan its
query heads. So the unit is the KV group: its K and V rows, the rows of the query heads that
read it, and those heads' columns of `o_proj`. (torch-pruning's MetaPruner prunes query heads
inside groups and never KV heads, and its dependency graph does not finish tracing these
decoders' rotary embeddings here, so the groups are formed from the architecture and
torch-pruning's functional pruners slice the weights.) Every layer loses the same number of
groups and neurons, because a Hugging Face config holds one width for all layers: the pruned
model saves and loads with `save_pretrained` / `from_pretrained` and generates with its cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError
from .encoder import _kept_width, parameter_count, torch_pruning
from .importance import accumulate_gradients, causal_lm_loss, layer_magnitude
from .specs import PruneSpec


def is_decoder(model) -> bool:
    """A Llama/Qwen2-shaped causal LM: model.layers[i].self_attn.{q,k,v,o}_proj and mlp.{gate,up,down}_proj."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return False
    first = layers[0]
    return all(hasattr(getattr(first, "self_attn", None), n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) and \
        all(hasattr(getattr(first, "mlp", None), n) for n in ("gate_proj", "up_proj", "down_proj"))


def _geometry(config) -> tuple[int, int, int]:
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv, head_dim


def _row_scores(weight, grad, importance: str):
    """Per output row: L2 norm (magnitude) or Σ|w·∂L/∂w| (Taylor)."""
    if importance == "taylor":
        return (weight * grad).abs().sum(1)
    return weight.norm(dim=1)


def _scores(layer, importance: str, kv: int, group: int, head_dim: int):
    """(KV-group scores [kv], neuron scores [intermediate]) of one decoder layer: the mean over the
    group's weight slices of each slice's score, as torch-pruning's group importance reduces."""
    import torch

    a, mlp = layer.self_attn, layer.mlp

    def rows(linear):
        return _row_scores(linear.weight.detach(), None if linear.weight.grad is None else linear.weight.grad,
                           importance)

    def columns(linear):
        weight = linear.weight.detach().T
        grad = None if linear.weight.grad is None else linear.weight.grad.T
        return _row_scores(weight, grad, importance)

    q, k, v, o = rows(a.q_proj), rows(a.k_proj), rows(a.v_proj), columns(a.o_proj)
    groups = []
    for j in range(kv):
        kv_slice = slice(j * head_dim, (j + 1) * head_dim)
        q_slice = slice(j * group * head_dim, (j + 1) * group * head_dim)
        groups.append(float(torch.cat([q[q_slice], k[kv_slice], v[kv_slice], o[q_slice]]).mean()))
    neurons = (rows(mlp.gate_proj) + rows(mlp.up_proj) + columns(mlp.down_proj)) / 3
    return torch.tensor(groups), neurons.float()


def prune_decoder(model, spec: PruneSpec, *, data: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Remove KV groups, FFN neurons and layers of a Llama/Qwen2 causal LM, in place.

    Args:
        model: a transformers LlamaForCausalLM, Qwen2ForCausalLM or another model of that shape.
        spec: what to remove (`heads` is the share of KV groups; scope must be "layer").
        data: examples with input_ids and attention_mask for Taylor importance (next-token loss).

    Returns:
        A report: layers kept, KV groups and query heads kept per layer, widths, parameters.

    Raises:
        InputError: global scope, Taylor without data, a recipe that would remove every KV group of
            a layer or every layer, layer indices out of range.
    """
    import torch

    from .encoder import _layers_to_drop

    tp = torch_pruning()
    if spec.scope != "layer":
        raise InputError("prune scope='global' gives layers different widths, which a decoder's Hugging Face config "
                         "cannot describe; use scope='layer'", field="scope")
    config = model.config
    layers = model.model.layers
    heads, kv, head_dim = _geometry(config)
    group = heads // kv
    before = parameter_count(model)
    if spec.importance == "taylor":
        layer_scores = accumulate_gradients(model, list(layers), data or [], causal_lm_loss, batches=spec.batches,
                                            batch_size=spec.batch_size)
    else:
        layer_scores = [layer_magnitude(layer) for layer in layers]
    scored = [_scores(layer, spec.importance, kv, group, head_dim) for layer in layers]
    model.zero_grad(set_to_none=True)
    drop = _layers_to_drop(spec, layer_scores)
    keep = [i for i in range(len(layers)) if i not in drop]
    groups_removed = int(round(spec.heads * kv))
    if groups_removed >= kv:
        raise InputError(f"prune heads={spec.heads:g} would remove all {kv} KV groups of every layer ({heads} query "
                         f"heads over {kv} K/V heads): remove at most {kv - 1}, a share below {(kv - 0.5) / kv:.2f}",
                         field="heads")
    intermediate = int(layers[0].mlp.gate_proj.out_features)
    width = _kept_width(intermediate, spec.ffn, spec.round_to) if spec.ffn else intermediate
    report_layers = []
    with torch.no_grad():
        for original in keep:
            layer = layers[original]
            group_scores, neuron_scores = scored[original]
            gone = sorted(sorted(range(kv), key=lambda j: (float(group_scores[j]), j))[:groups_removed])
            if gone:
                kv_rows = [j * head_dim + d for j in gone for d in range(head_dim)]
                q_rows = [(j * group + h) * head_dim + d for j in gone for h in range(group) for d in range(head_dim)]
                a = layer.self_attn
                tp.prune_linear_out_channels(a.q_proj, q_rows)
                tp.prune_linear_out_channels(a.k_proj, kv_rows)
                tp.prune_linear_out_channels(a.v_proj, kv_rows)
                tp.prune_linear_in_channels(a.o_proj, q_rows)
            cut = sorted(set(range(intermediate)) - set(torch.topk(neuron_scores, width).indices.tolist()))
            if cut:
                mlp = layer.mlp
                tp.prune_linear_out_channels(mlp.gate_proj, cut)
                tp.prune_linear_out_channels(mlp.up_proj, cut)
                tp.prune_linear_in_channels(mlp.down_proj, cut)
            report_layers.append({"layer": original, "kv_groups_removed": gone,
                                  "group_scores": [round(float(s), 6) for s in group_scores]})
    model.model.layers = torch.nn.ModuleList(layers[i] for i in keep)
    for index, layer in enumerate(model.model.layers):  # the KV cache is indexed by layer
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    types = getattr(config, "layer_types", None)
    if types:
        config.layer_types = [types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    config.num_key_value_heads = kv - groups_removed
    config.num_attention_heads = (kv - groups_removed) * group
    # Explicit: a config without head_dim would recompute it from the hidden size and the new head count.
    config.head_dim = head_dim
    config.intermediate_size = width
    return {"step": "prune", "family": "decoder", "importance": spec.importance, "layers_removed": drop,
            "layers_kept": keep, "layer_scores": [round(float(s), 6) for s in layer_scores],
            "kv_groups": kv - groups_removed, "query_heads": (kv - groups_removed) * group, "ffn": width,
            "layers": report_layers, "parameters_before": before, "parameters_after": parameter_count(model)}
