"""Low-rank factorisation by truncated SVD (`torch.linalg.svd`): Linear layers and the embedding table.

W (m × n) ≈ U_r Σ_r V_rᵀ. A Linear becomes `down` (n → r, weights Σ_r^½ V_rᵀ) then `up` (r → m,
weights U_r Σ_r^½, the original bias); the word-embedding table V × H becomes a V × r table
(U_r Σ_r) and an r × H projection (V_rᵀ). The Eckart–Young theorem makes this the best rank-r
approximation in the Frobenius norm, and its relative error is √(Σ_{i≥r} σ_i² / Σ σ_i²).
Two factors cost r·(m + n) multiply-adds and parameters against m·n: below
r < m·n / (m + n) they save both, at or above it neither, so such ranks are refused.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InputError
from ..distill.structure import low_rank_classes
from .specs import LOW_RANK_KINDS, LowRankSpec

_SUFFIXES = {
    "embeddings": ("embeddings.word_embeddings", "embed_tokens"),
    "ffn_in": ("intermediate.dense", "mlp.gate_proj", "mlp.up_proj"),
    "ffn_out": ("output.dense", "mlp.down_proj"),
    "attention": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
}


def break_even(m: int, n: int) -> float:
    """The rank at which two factors cost what W (m × n) costs: m·n / (m + n)."""
    return m * n / (m + n)


def max_saving_rank(m: int, n: int) -> int:
    """The largest rank that still saves: the largest integer below m·n / (m + n)."""
    return math.ceil(break_even(m, n)) - 1


def _matches(name: str, kind: str) -> bool:
    if kind == "ffn":
        return _matches(name, "ffn_in") or _matches(name, "ffn_out")
    if kind == "ffn_out" and name.endswith("attention.output.dense"):
        return False  # the attention block's output, not the feed-forward one
    return any(name == s or name.endswith("." + s) for s in _SUFFIXES[kind])


def resolve_targets(model, key: str) -> list[tuple[str, Any]]:
    """(name, module) pairs a low-rank target names: a kind or one module's name.

    Raises:
        InputError: a name that is neither a kind nor a Linear/Embedding of the model, a kind that
            matches nothing, or a module already factorised.
    """
    import torch

    low_rank_linear, factorised = low_rank_classes()
    modules = dict(model.named_modules())
    if key in modules:
        found = [(key, modules[key])]
    elif key in LOW_RANK_KINDS:
        found = [(name, m) for name, m in modules.items() if _matches(name, key)
                 and isinstance(m, (torch.nn.Linear, torch.nn.Embedding, low_rank_linear, factorised))]
        if not found:
            raise InputError(f"low-rank {key}: the model has no {key} modules", field=key)
    else:
        examples = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)][:3]
        raise InputError(f"low-rank target {key!r} is neither a kind ({', '.join(LOW_RANK_KINDS)}) nor a module of "
                         f"the model (module names look like {examples})", field=key)
    for name, module in found:
        if isinstance(module, (low_rank_linear, factorised)):
            raise InputError(f"low-rank {key}: {name} is already factorised (rank {module.rank})", field=key)
        if not isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            raise InputError(f"low-rank {key}: {name} is a {type(module).__name__}; only Linear layers and "
                             "embedding tables factorise", field=key)
    return found


def choose_rank(key: str, name: str, singular, m: int, n: int, value: int | float) -> int:
    """The rank for one module: `value` itself, or the smallest keeping `value` of the spectral energy.

    Raises:
        InputError: a rank above min(m, n), or one that saves nothing (≥ m·n / (m + n)).
    """
    limit = max_saving_rank(m, n)
    if isinstance(value, float):
        energy = (singular.double() ** 2).cumsum(0) / (singular.double() ** 2).sum()
        rank = int((energy < value).sum()) + 1
        if rank > limit:
            raise InputError(f"low-rank {key}={value:g}: keeping {value:.0%} of {name}'s spectral energy needs rank "
                             f"{rank}, but only ranks 1..{limit} save anything on a {m}×{n} matrix (below "
                             f"m·n/(m+n) = {break_even(m, n):.1f}); keep less energy or give a rank", field=key)
        return rank
    if value > min(m, n):
        raise InputError(f"low-rank {key}={value}: {name} is {m}×{n}, so its rank is at most min(m, n) = {min(m, n)}; "
                         f"ranks that save compute and size are 1..{limit}", field=key)
    if value > limit:
        raise InputError(f"low-rank {key}={value}: rank {value} cannot save compute or size on {name} ({m}×{n}): two "
                         f"factors cost r·(m+n) = {value * (m + n)} against m·n = {m * n}; allowed ranks are "
                         f"1..{limit} (below m·n/(m+n) = {break_even(m, n):.1f})", field=key)
    return int(value)


def factorise_module(module, rank: int):
    """The rank-`rank` replacement of a Linear or an Embedding, and its relative Frobenius error."""
    import torch

    low_rank_linear, factorised = low_rank_classes()
    weight = module.weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    error = float(torch.sqrt((s[rank:] ** 2).sum() / (s ** 2).sum())) if rank < len(s) else 0.0
    with torch.no_grad():
        if isinstance(module, torch.nn.Embedding):
            new = factorised(module.num_embeddings, module.embedding_dim, rank, module.padding_idx)
            new.table.weight.copy_((u[:, :rank] * s[:rank]).to(module.weight.dtype))
            new.project.weight.copy_(vh[:rank].T.to(module.weight.dtype))
            # A frozen table (the students keep the teacher's word embeddings) stays frozen; the
            # projection learns, so unseen words still move with the ones training shows.
            new.table.weight.requires_grad_(module.weight.requires_grad)
        else:
            root = torch.sqrt(s[:rank])
            new = low_rank_linear(module.in_features, module.out_features, rank, module.bias is not None)
            new.down.weight.copy_((root[:, None] * vh[:rank]).to(module.weight.dtype))
            new.up.weight.copy_((u[:, :rank] * root).to(module.weight.dtype))
            if module.bias is not None:
                new.up.bias.copy_(module.bias.detach())
    return new, error, s


def factorise(model, spec: LowRankSpec) -> dict[str, Any]:
    """Replace the modules `spec` names with their truncated-SVD factors, in place.

    Args:
        model: any torch module (BERT-family kinds are recognised by name; any Linear or Embedding by
            its module name).
        spec: target → rank or kept energy.

    Returns:
        A report: per module its shape, rank, kept energy, relative error and parameters before/after.

    Raises:
        InputError: unknown targets, ranks that cannot save, ranks above min(m, n).
    """
    import torch

    from ..distill.structure import _set_module

    planned = []
    for key, value in spec.targets.items():
        for name, module in resolve_targets(model, key):
            m, n = module.weight.shape if isinstance(module, torch.nn.Embedding) else \
                (module.out_features, module.in_features)
            singular = torch.linalg.svdvals(module.weight.detach().double())
            planned.append((key, name, module, choose_rank(key, name, singular, int(m), int(n), value), singular))
    rows = []
    for key, name, module, rank, singular in planned:  # every rank checked before any module changes
        new, error, _ = factorise_module(module, rank)
        _set_module(model, name, new)
        energy = float((singular[:rank] ** 2).sum() / (singular ** 2).sum())
        rows.append({"target": key, "module": name, "shape": list(module.weight.shape), "rank": rank,
                     "energy_kept": round(energy, 6), "relative_error": round(error, 6),
                     "parameters_before": int(module.weight.numel()),
                     "parameters_after": int(sum(p.numel() for n, p in new.named_parameters() if n != "up.bias"))})
    return {"step": "low_rank", "modules": rows}
