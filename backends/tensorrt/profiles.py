"""Optimization profiles: min/opt/max for every dynamic input dimension (no GPU needed).

TensorRT builds kernels for a range of shapes per input; a call outside the range fails. The
ranges come from, in order: shapes given explicitly, the real shapes of the data the model will
see (calibration or workload samples), or a default. Inputs that share a symbolic dimension
(`sequence` in both `input_ids` and `attention_mask`) get one range, as TensorRT requires them
to agree at run time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeagent.errors import InputError
from edgeagent.ir import UNKNOWN_DIM, TensorSpec


@dataclass(frozen=True)
class ShapeRange:
    """One input's profile: the smallest, the tuned-for and the largest shape."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))


def parse_shapes(text: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Parse `name:MIN,OPT,MAX;name:...` with shapes written `1x32` (the CLI form).

    Example: `input_ids:1x1,1x32,8x128;attention_mask:1x1,1x32,8x128`.

    Raises:
        InputError: a part that does not follow the form, naming it.
    """
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, ranges = part.rpartition(":")
        triple = ranges.split(",")
        if not sep or not name or len(triple) != 3:
            raise InputError(f"shapes entry {part!r} is not NAME:MIN,OPT,MAX (e.g. input_ids:1x1,1x32,8x128)",
                             field="shapes")
        try:
            shapes[name] = tuple(tuple(int(d) for d in s.lower().split("x")) for s in triple)
        except ValueError:
            raise InputError(f"shapes entry {part!r} has a dimension that is not an integer; write shapes "
                             "as 1x32", field="shapes") from None
    return shapes


def compute_profile(inputs: Sequence[TensorSpec], *, samples: Iterable[Mapping[str, np.ndarray]] | None = None,
                    shapes: Mapping[str, Sequence[Sequence[int]]] | None = None, max_batch: int = 8,
                    default_dim: int = 128) -> tuple[dict[str, ShapeRange], dict[str, str]]:
    """min/opt/max per input, and where each dynamic dimension's range came from.

    Args:
        inputs: the model's inputs.
        samples: feed dicts with real shapes; each dynamic dimension spans what they show
            (opt is the median), and a leading batch dimension reaches at least `max_batch`.
        shapes: explicit {input: (min, opt, max)} for some or all inputs; wins over samples.
        max_batch: largest batch when the first dimension is dynamic (default 8).
        default_dim: max of a dynamic dimension with neither samples nor shapes (default 128).

    Returns:
        ({input: ShapeRange}, {"input[axis]": source}) where source is "fixed", "explicit",
        "samples" or "default".

    Raises:
        InputError: explicit shapes for an unknown input, of the wrong rank, not 1 ≤ min ≤ opt ≤ max,
            or disagreeing with a fixed dimension; samples whose rank or fixed dimensions differ.
    """
    by_name = {spec.name: spec for spec in inputs}
    explicit = dict(shapes or {})
    for name in explicit:
        if name not in by_name:
            raise InputError(f"shapes given for {name!r}, which is not an input; inputs: {sorted(by_name)}",
                             field="shapes")

    # One key per dynamic dimension: the symbolic name where it has one, else (input, axis).
    def key(spec: TensorSpec, axis: int) -> Any:
        dim = spec.shape[axis]
        return dim if isinstance(dim, str) and dim != UNKNOWN_DIM else (spec.name, axis)

    observed: dict[Any, list[int]] = {}
    for feeds in samples or ():
        for spec in inputs:
            if spec.name not in feeds:
                continue
            shape = np.shape(feeds[spec.name])
            if len(shape) != spec.rank:
                raise InputError(f"a sample of {spec.name!r} has shape {tuple(shape)}, the model expects rank "
                                 f"{spec.rank} ({_fmt(spec.shape)})", field=spec.name)
            for axis, (dim, size) in enumerate(zip(spec.shape, shape)):
                if isinstance(dim, int):
                    if dim != size:
                        raise InputError(f"a sample of {spec.name!r} has {size} at axis {axis}, where the model "
                                         f"fixes {dim}", field=spec.name)
                else:
                    observed.setdefault(key(spec, axis), []).append(int(size))

    ranges: dict[Any, tuple[int, int, int, str]] = {}
    for name, triple in explicit.items():
        spec = by_name[name]
        if len(triple) != 3 or any(len(s) != spec.rank for s in triple):
            raise InputError(f"shapes for {name!r} must be three shapes (min, opt, max) of rank {spec.rank} "
                             f"({_fmt(spec.shape)}), got {triple}", field="shapes")
        for axis, dim in enumerate(spec.shape):
            lo, opt, hi = (int(s[axis]) for s in triple)
            if not 1 <= lo <= opt <= hi:
                raise InputError(f"shapes for {name!r} axis {axis}: need 1 <= min <= opt <= max, got "
                                 f"{lo}, {opt}, {hi}", field="shapes")
            if isinstance(dim, int):
                if (lo, opt, hi) != (dim, dim, dim):
                    raise InputError(f"shapes for {name!r} axis {axis} give {lo}..{hi}, but the model fixes it "
                                     f"at {dim}", field="shapes")
                continue
            k = key(spec, axis)
            if k in ranges and ranges[k][:3] != (lo, opt, hi):
                raise InputError(f"shapes for {name!r} axis {axis} ({dim}) disagree with another input that "
                                 f"shares it: {ranges[k][:3]} vs {(lo, opt, hi)}", field="shapes")
            ranges[k] = (lo, opt, hi, "explicit")

    profile: dict[str, ShapeRange] = {}
    sources: dict[str, str] = {}
    for spec in inputs:
        lows, opts, highs = [], [], []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                lows.append(dim), opts.append(dim), highs.append(dim)
                sources[f"{spec.name}[{axis}]"] = "fixed"
                continue
            k = key(spec, axis)
            if k not in ranges:
                batch_axis = axis == 0
                seen = observed.get(k)
                if seen:
                    lo = 1 if batch_axis else min(seen)
                    hi = max(max(seen), max_batch) if batch_axis else max(seen)
                    opt = min(max(int(math.ceil(float(np.median(seen)))), lo), hi)
                    ranges[k] = (lo, opt, hi, "samples")
                elif batch_axis:
                    ranges[k] = (1, 1, max_batch, "default")
                else:
                    ranges[k] = (1, max(1, default_dim // 4), default_dim, "default")
            lo, opt, hi, source = ranges[k]
            lows.append(lo), opts.append(opt), highs.append(hi)
            sources[f"{spec.name}[{axis}]"] = source
        profile[spec.name] = ShapeRange(tuple(lows), tuple(opts), tuple(highs))
    return profile, sources


def _fmt(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
