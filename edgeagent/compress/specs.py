"""What to compress and how: frozen, validated recipes, and their `--prune` / `--low-rank` spellings."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError

IMPORTANCE = ("taylor", "magnitude")
SCOPES = ("layer", "global")
GOALS = ("speed", "size")
ON_REJECT = ("error", "keep-input")
# Low-rank targets by kind; any module name (a Linear or an Embedding) is accepted too.
LOW_RANK_KINDS = ("embeddings", "ffn", "ffn_in", "ffn_out", "attention")


def _ratio(name: str, value: Any) -> float:
    """A removal ratio in [0, 1): 1 would remove everything, which no recipe may do."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"prune {name}={value!r}: a ratio must be a number in [0, 1)", field=name)
    if not 0 <= value < 1:
        raise InputError(f"prune {name}={value:g} is outside [0, 1): it is the share removed, and removing "
                         "all of it leaves nothing to run", field=name)
    return float(value)


@dataclass(frozen=True)
class PruneSpec:
    """Structured pruning: what is removed physically (smaller matrices, fewer layers).

    Args:
        heads: share of attention heads removed, in [0, 1). On a decoder with grouped-query
            attention, whole KV groups go (a K/V head with the query heads that read it).
        ffn: share of feed-forward neurons removed, in [0, 1).
        layers: share of whole layers removed, in [0, 1), or the indices of the layers to remove.
        importance: "taylor" (first-order Taylor on `data`: |w · ∂L/∂w| summed over a head's or a
            neuron's weights; for a layer, |∂L/∂g| of a gate g on its residual update) or
            "magnitude" (L2 norm of the weights; needs no data).
        scope: "layer" (every layer loses the same share) or "global" (heads and neurons ranked
            across layers; encoders only, since a decoder's config holds one width for all layers).
        round_to: FFN widths kept as a multiple of this (default 1; 8 or 16 suit SIMD kernels).
        batches: batches of `data` the Taylor gradients are summed over (default 16).
        batch_size: examples per batch (default 32).
        positions: keep only the first N rows of an encoder's position table (default None: all).
            A model that never reads past N tokens (the task's `max_length`, 64 for intent-slots)
            never looks up the rest; at the demo student's width they are 0.79 MB of float32 that
            dynamic INT8 leaves unquantized.

    Raises:
        InputError: a ratio outside [0, 1), layer indices that repeat or would remove every
            layer, an unknown importance or scope, round_to below 1, positions below 1.
    """

    heads: float = 0.0
    ffn: float = 0.0
    layers: float | tuple[int, ...] = 0.0
    importance: str = "taylor"
    scope: str = "layer"
    round_to: int = 1
    batches: int = 16
    batch_size: int = 32
    positions: int | None = None

    def __post_init__(self) -> None:
        _ratio("heads", self.heads)
        _ratio("ffn", self.ffn)
        if isinstance(self.layers, (list, tuple)):
            indices = tuple(self.layers)
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
                raise InputError(f"prune layers={list(indices)}: layer indices must be integers ≥ 0", field="layers")
            if len(set(indices)) != len(indices):
                raise InputError(f"prune layers={list(indices)} names a layer twice", field="layers")
            object.__setattr__(self, "layers", indices)
        else:
            _ratio("layers", self.layers)
        if self.importance not in IMPORTANCE:
            raise InputError(f"prune importance={self.importance!r}: choose one of {list(IMPORTANCE)}",
                             field="importance")
        if self.scope not in SCOPES:
            raise InputError(f"prune scope={self.scope!r}: choose one of {list(SCOPES)}", field="scope")
        if self.positions is not None and (isinstance(self.positions, bool) or not isinstance(self.positions, int)
                                           or self.positions < 1):
            raise InputError(f"prune positions={self.positions!r}: the number of position rows kept, an integer ≥ 1",
                             field="positions")
        for name in ("round_to", "batches", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"prune {name}={value!r}: an integer ≥ 1", field=name)

    @property
    def empty(self) -> bool:
        return not self.heads and not self.ffn and not self.layers and self.positions is None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers) if isinstance(self.layers, tuple) else self.layers
        return out


@dataclass(frozen=True)
class LowRankSpec:
    """Low-rank factorisation (truncated SVD): W (m × n) → two factors of rank r.

    Args:
        targets: kind or module name → an integer rank r, or a float in (0, 1): the share of
            spectral energy (Σσ²) to keep, which picks the smallest such rank. Kinds:
            "embeddings" (the word-embedding table: vocabulary × r, then r × hidden), "ffn"
            (both feed-forward Linears), "ffn_in", "ffn_out", "attention" (query, key, value
            and output). A factorisation pays only while r < m·n / (m + n); larger ranks are
            refused, as are ranks above min(m, n).

    Raises:
        InputError: no target, or a rank that is neither an integer ≥ 1 nor a share in (0, 1).
    """

    targets: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        targets = dict(self.targets)
        for name, value in targets.items():
            if not isinstance(name, str) or not name:
                raise InputError(f"low-rank target {name!r}: a kind {list(LOW_RANK_KINDS)} or a module name",
                                 field="low_rank")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"low-rank {name}={value!r}: a rank (integer ≥ 1) or a share of spectral energy "
                                 "in (0, 1)", field=name)
            if isinstance(value, float) and value.is_integer() and value >= 1:
                value = int(value)
            if isinstance(value, int) and value < 1:
                raise InputError(f"low-rank {name}={value}: a rank must be at least 1", field=name)
            if isinstance(value, float) and not 0 < value < 1:
                raise InputError(f"low-rank {name}={value:g}: a share of spectral energy must be in (0, 1)",
                                 field=name)
            targets[name] = value
        object.__setattr__(self, "targets", targets)

    @property
    def empty(self) -> bool:
        return not self.targets

    def to_json(self) -> dict[str, Any]:
        return dict(self.targets)


@dataclass(frozen=True)
class RecoverSpec:
    """Recovery by distillation from the uncompressed model (`edgeagent.distill`).

    Args:
        epochs: passes over `data` at most (0: no recovery).
        lr: peak learning rate (default 1e-4, the demo student's).
        batch_size: examples per step (default 32).
        temperature: softening of both distributions (default 2.0).
        alpha: weight of the distillation term against the labels' cross-entropy (default 0.5).
        hidden_loss: "auto" (default: MSE on the last hidden states where the widths match, which
            pruning heads, neurons and layers and factorising keep), "mse" or None.
        patience: epochs without improvement on `eval` before stopping (default 2).
        after: "end" (one recovery after all steps) or "each" (after pruning and again after
            factorising).
        group_by_length: batch sentences of similar length together (less padding).
        seed: shuffling and dropout seed.
        bf16: bf16 autocast for the training forward pass: True, False (default) or "auto" (where
            the CPU computes bf16 natively); as `edgeagent.distill`'s.

    Raises:
        InputError: a negative epoch count, a non-positive learning rate, an unknown hidden loss,
            `after` or `bf16`.
    """

    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 32
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_loss: str | None = "auto"
    patience: int = 2
    after: str = "end"
    group_by_length: bool = True
    seed: int = 0
    bf16: bool | str = False

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise InputError(f"recover epochs={self.epochs!r}: an integer ≥ 0", field="epochs")
        if not self.lr > 0:
            raise InputError(f"recover lr={self.lr!r}: must be > 0", field="lr")
        if self.hidden_loss not in ("auto", "mse", None):
            raise InputError(f"recover hidden_loss={self.hidden_loss!r}: 'auto', 'mse' or None", field="hidden_loss")
        if self.after not in ("end", "each"):
            raise InputError(f"recover after={self.after!r}: 'end' or 'each'", field="after")
        if not 0 <= self.alpha <= 1:
            raise InputError(f"recover alpha={self.alpha!r}: in [0, 1]", field="alpha")
        if self.bf16 not in (True, False, "auto"):
            raise InputError(f"recover bf16={self.bf16!r}: True, False or 'auto'", field="bf16")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MeasureSpec:
    """The gate: a recipe is kept only if its export measures faster (or smaller) than the input's.

    Both models are exported, compiled the same way and timed side by side in interleaved rounds;
    "faster" means the 95 % bootstrap confidence interval of the p50 change (`edgeagent.bench.compare`)
    lies entirely below −`min_change_pct`.

    Args:
        goal: "speed" (p50, end to end where the workload has a reader) or "size" (artifact bytes).
        backend: backend both are compiled for (default onnxruntime).
        precision: precision both are compiled at (default int8).
        options: compile options (default: dynamic INT8 with per-channel weight scales, the demo's).
        threads: inference threads for timing (default 1).
        rounds: interleaved timing rounds (default 9).
        min_seconds: timed seconds per model per round (default 0.25).
        min_change_pct: how much better the compressed model must be, in percent (default 0: any
            change the noise cannot explain).
        on_reject: "error" (raise CompressionRejected) or "keep-input" (return the input model, marked).

    Raises:
        InputError: an unknown goal or on_reject, non-positive rounds or seconds.
    """

    goal: str = "speed"
    backend: str = "onnxruntime"
    precision: str = "int8"
    options: Mapping[str, Any] = field(default_factory=lambda: {"int8": "dynamic", "per_channel": True})
    threads: int = 1
    rounds: int = 9
    min_seconds: float = 0.25
    min_change_pct: float = 0.0
    on_reject: str = "error"

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise InputError(f"measure goal={self.goal!r}: choose one of {list(GOALS)}", field="goal")
        if self.on_reject not in ON_REJECT:
            raise InputError(f"measure on_reject={self.on_reject!r}: choose one of {list(ON_REJECT)}",
                             field="on_reject")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 2:
            raise InputError(f"measure rounds={self.rounds!r}: an integer ≥ 2 (the interval needs repeats)",
                             field="rounds")
        if not self.min_seconds > 0:
            raise InputError(f"measure min_seconds={self.min_seconds!r}: must be > 0", field="min_seconds")
        if not 0 <= self.min_change_pct < 100:
            raise InputError(f"measure min_change_pct={self.min_change_pct!r}: in [0, 100)", field="min_change_pct")
        object.__setattr__(self, "options", dict(self.options))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(text: str, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"{flag} {item!r} is not KEY=VALUE", field=flag)
        pairs.append((key.strip(), value.strip()))
    return pairs


def _number(flag: str, key: str, value: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{flag} {key}={value}: expected a number", field=key) from None


PRUNE_KEYS = ("heads", "ffn", "layers", "positions")


def parse_prune(text: str, **settings: Any) -> PruneSpec:
    """`heads=0.5,ffn=0.5,layers=0.25` (shares removed) → PruneSpec; `layers=1+3` removes layers 1 and 3
    (`layers=2+` layer 2 alone); `positions=64` keeps 64 position rows.

    Raises:
        InputError: an unknown key, a value that is not a number, or a PruneSpec error.
    """
    values: dict[str, Any] = {}
    for key, value in _pairs(text, "--prune"):
        if key not in PRUNE_KEYS:
            raise InputError(f"--prune: unknown key {key!r}; keys: {list(PRUNE_KEYS)}", field="--prune")
        if key == "positions":
            number = _number("--prune", key, value)
            if not isinstance(number, int):
                raise InputError(f"--prune positions={value}: a whole number of position rows", field="positions")
            values[key] = number
        elif key == "layers" and "+" in value:
            # Indices are joined by '+' (`layers=1+3`; one layer: `layers=2+`), so that `layers=0`
            # stays a share (nothing removed), never "remove layer 0".
            try:
                values[key] = tuple(int(v) for v in value.split("+") if v)
            except ValueError:
                raise InputError(f"--prune layers={value}: a share in [0, 1) or layer indices joined by '+' "
                                 "(1+3, or 2+ for one layer)", field="layers") from None
        elif key == "layers" and value.isdigit() and int(value) >= 1:
            raise InputError(f"--prune layers={value}: a share is in [0, 1); to remove layer {value} write "
                             f"layers={value}+ (indices are joined by '+')", field="layers")
        else:
            values[key] = float(_number("--prune", key, value))
    return PruneSpec(**values, **settings)


def parse_low_rank(text: str) -> LowRankSpec:
    """`embeddings=96,ffn=0.9` → LowRankSpec (an integer is a rank, a share in (0, 1) kept energy).

    Raises:
        InputError: a value that is not a number, or a LowRankSpec error.
    """
    return LowRankSpec({key: _number("--low-rank", key, value) for key, value in _pairs(text, "--low-rank")})


def as_prune(value: Any) -> PruneSpec | None:
    """A PruneSpec from a spec, a mapping of its fields or a `--prune` string (None stays None).

    Raises:
        InputError: anything else, or what PruneSpec raises.
    """
    if value is None or isinstance(value, PruneSpec):
        return value
    if isinstance(value, str):
        return parse_prune(value)
    if isinstance(value, Mapping):
        unknown = set(value) - set(PruneSpec.__dataclass_fields__)
        if unknown:
            raise InputError(f"prune: unknown keys {sorted(unknown)}; keys: {sorted(PruneSpec.__dataclass_fields__)}",
                             field="prune")
        fields = dict(value)
        if isinstance(fields.get("layers"), Sequence) and not isinstance(fields.get("layers"), str):
            fields["layers"] = tuple(fields["layers"])
        return PruneSpec(**fields)
    raise InputError(f"prune must be a PruneSpec, a mapping or a string like 'heads=0.5', got {type(value).__name__}",
                     field="prune")


def as_low_rank(value: Any) -> LowRankSpec | None:
    """A LowRankSpec from a spec, a mapping target → rank or a `--low-rank` string.

    Raises:
        InputError: anything else, or what LowRankSpec raises.
    """
    if value is None or isinstance(value, LowRankSpec):
        return value
    if isinstance(value, str):
        return parse_low_rank(value)
    if isinstance(value, Mapping):
        return LowRankSpec(dict(value))
    raise InputError(f"low_rank must be a LowRankSpec, a mapping or a string like 'embeddings=96', got "
                     f"{type(value).__name__}", field="low_rank")


def as_recover(value: Any) -> RecoverSpec | None:
    """A RecoverSpec from a spec, a mapping of its fields or an epoch count (0 or None: no recovery).

    Raises:
        InputError: anything else, or what RecoverSpec raises.
    """
    if value is None or isinstance(value, RecoverSpec):
        return value
    if isinstance(value, bool):
        return RecoverSpec() if value else None
    if isinstance(value, int):
        return RecoverSpec(epochs=value) if value else None
    if isinstance(value, Mapping):
        return RecoverSpec(**value)
    raise InputError(f"recover must be a RecoverSpec, a mapping or an epoch count, got {type(value).__name__}",
                     field="recover")


def as_measure(value: Any) -> MeasureSpec | None:
    """A MeasureSpec from a spec, a mapping of its fields or a goal name ("speed", "size").

    Raises:
        InputError: anything else, or what MeasureSpec raises.
    """
    if value is None or isinstance(value, MeasureSpec):
        return value
    if isinstance(value, str):
        return MeasureSpec(goal=value)
    if isinstance(value, Mapping):
        return MeasureSpec(**value)
    raise InputError(f"measure must be a MeasureSpec, a mapping or a goal name, got {type(value).__name__}",
                     field="measure")
