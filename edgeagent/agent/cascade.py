"""The router → generative model cascade, as Home Assistant's Assist pipeline runs it ("prefer
handling commands locally", then a language-model conversation agent).

The router answers when its calibrated confidence reaches the threshold and it understood the
utterance; otherwise the generative agent does. Each ToolCall says which answered
(`answered_by`: "router" or "generator"). The threshold is chosen on held-out data
(`choose_threshold`: the best exact match whose predicted p50 latency stays within a budget)
and recorded in the cascade folder:

    cascade/cascade.json   {"schema": "edgeagent.cascade/1", "router": "../agent",
                            "generator": "../generative", "threshold": 0.93, "selection": {...}}

The two agent folders are referenced by path (relative to the cascade folder), each checked
as `EdgeAgent.load` checks any agent folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import safeio
from ..artifact import atomic_write_text
from ..errors import ArtifactError, InputError
from ..tasks.base import ToolCall, require_fraction
from .runtime import ToolHandlers

CASCADE_FILE = "cascade.json"
CASCADE_SCHEMA = "edgeagent.cascade/1"


class Cascade(ToolHandlers):
    """Two agents behind the EdgeAgent API: `act`, `act_batch`, `handle`, `tool`, `check_context`."""

    def __init__(self, router: Any, generator: Any, *, threshold: float, selection: Mapping[str, Any] | None = None
                 ) -> None:
        self.router, self.generator = router, generator
        self.threshold = check_threshold(threshold)
        self.selection = dict(selection or {})
        self.tools: dict[str, Any] = {}
        # serve and the CLI show the router's artifact; the generator's is `generator.artifact`.
        self.artifact, self.task, self.home = router.artifact, router.task, getattr(router, "home", None)

    @property
    def batch_invariant(self) -> bool:
        return self.router.batch_invariant and self.generator.batch_invariant

    def check_context(self, context: Mapping[str, str] | None) -> dict[str, str]:
        return self.router.check_context(context)

    def _pick(self, routed: ToolCall, text: str, context: Any) -> ToolCall:
        if routed.understood and routed.confidence >= self.threshold:
            routed.answered_by = "router"
            return routed
        answer = self.generator.act(text, context)
        answer.answered_by = "generator"
        answer.latency_ms += routed.latency_ms  # the caller waited for both
        return answer

    def act(self, text: str, context: Mapping[str, str] | None = None) -> ToolCall:
        """The router's answer when confident, else the generative agent's."""
        return self._pick(self.router.act(text, context), text, context)

    def act_batch(self, texts: Sequence[str], contexts: Sequence[Mapping[str, str] | None] | None = None
                  ) -> list[ToolCall]:
        texts = list(texts)
        contexts = list(contexts) if contexts is not None else [None] * len(texts)
        routed = self.router.act_batch(texts, contexts)
        return [self._pick(call, text, context) for call, text, context in zip(routed, texts, contexts)]

    def close(self) -> None:
        self.router.close()
        self.generator.close()

    # -- folders -----------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | os.PathLike, *, backend: str | None = None, precision: str | None = None,
             options: Any = None, target: Any = None, device: str | None = None, home: Any = None) -> Cascade:
        """Open a cascade folder: its record, then both agent folders it names.

        `backend`, `precision`, `options` and `device` apply to the generative agent (the router
        opens its host's preferred artifact); `home` to both.

        Raises:
            ArtifactError: a malformed record or a referenced folder that is missing or broken.
        """
        from .runtime import EdgeAgent

        folder = Path(folder)
        path = folder / CASCADE_FILE
        record = safeio.read_json(path, what="cascade record", follow_symlinks=False,
                                  error=lambda reason: ArtifactError(f"{path} {reason}; rebuild the cascade"))
        if not isinstance(record, dict) or record.get("schema") != CASCADE_SCHEMA:
            raise ArtifactError(f"{path} is not a {CASCADE_SCHEMA} record; rebuild it (`edgeagent demo --generative`)")
        paths = {}
        for key in ("router", "generator"):
            value = record.get(key)
            if not isinstance(value, str) or not value:
                raise ArtifactError(f"{path} names no {key} folder; rebuild the cascade")
            paths[key] = (folder / value).resolve()
            if not paths[key].is_dir():
                raise ArtifactError(f"{path}: its {key} folder {paths[key]} is missing; build it, or move both "
                                    "agent folders with the cascade")
        try:
            threshold = check_threshold(record.get("threshold"))
        except InputError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        router = EdgeAgent.load(paths["router"], target=target, home=home)
        try:
            generator = EdgeAgent.load(paths["generator"], backend=backend, precision=precision, options=options,
                                       target=target, device=device, home=home)
        except Exception:
            router.close()
            raise
        return cls(router, generator, threshold=threshold, selection=record.get("selection"))


ALWAYS_GENERATOR = 1.01  # a threshold above any confidence: every utterance goes to the generator


def check_threshold(value: Any) -> float:
    """A threshold in [0, 1], or ALWAYS_GENERATOR.

    Raises:
        InputError: anything else.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == ALWAYS_GENERATOR:
        return ALWAYS_GENERATOR
    return require_fraction(value, "threshold")


def cascade(router: Any, generator: Any, *, threshold: float | None = None, examples: Sequence[Any] | None = None,
            latency_budget_ms: float | None = None) -> Cascade:
    """`EdgeAgent.cascade`: a fixed threshold, or one chosen on `examples` (held-out utterances with
    `.text`, `.intent` and `.slots`) under the latency budget.

    Raises:
        InputError: neither a threshold nor examples.
    """
    if threshold is not None:
        return Cascade(router, generator, threshold=threshold)
    if not examples:
        raise InputError("give threshold=, or held-out examples= to choose it on (the dev split)", field="threshold")
    from ..tasks.text_generation import call_matches

    def gold(e: Any) -> tuple[str, str, Mapping[str, Any]]:
        return (e["text"], e["intent"], e.get("slots") or {}) if isinstance(e, Mapping) else (e.text, e.intent, e.slots)

    golds = [gold(e) for e in examples]
    routed = [router.act(t) for t, _, _ in golds]
    generated = [generator.act(t) for t, _, _ in golds]
    ok_router = [call_matches(c, i, s) for c, (_, i, s) in zip(routed, golds)]
    ok_generator = [call_matches(c, i, s) for c, (_, i, s) in zip(generated, golds)]
    selection = choose_threshold(routed, generated, ok_router, ok_generator, latency_budget_ms=latency_budget_ms)
    return Cascade(router, generator, threshold=selection["threshold"], selection=selection)


def write_cascade_folder(folder: str | os.PathLike, router: str | os.PathLike, generator: str | os.PathLike, *,
                         threshold: float, selection: Mapping[str, Any] | None = None) -> Path:
    """Write `cascade.json` naming the two agent folders (relative paths where they share a parent)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    threshold = check_threshold(threshold)

    def ref(path: str | os.PathLike) -> str:
        return os.path.relpath(Path(path).resolve(), folder.resolve())

    record = {"schema": CASCADE_SCHEMA, "router": ref(router), "generator": ref(generator), "threshold": threshold,
              "selection": dict(selection or {})}
    import json

    atomic_write_text(folder / CASCADE_FILE, json.dumps(record, indent=1, default=str) + "\n")
    return folder


def choose_threshold(router_calls: Sequence[ToolCall], generator_calls: Sequence[ToolCall],
                     correct_router: Sequence[bool], correct_generator: Sequence[bool], *,
                     latency_budget_ms: float | None = None) -> dict[str, Any]:
    """The router-confidence threshold with the best accuracy whose predicted p50 latency stays within
    the budget, on held-out data where both models answered every utterance.

    Each candidate threshold t routes an utterance to the generator when the router did not
    understand it or its confidence is below t; its latency is then the router's plus the
    generator's. Among equally accurate thresholds the fastest wins. Candidates: 0 (router
    alone, unless it said not_understood), every confidence seen, and 1.01 (generator always).

    Returns:
        {"threshold", "accuracy", "p50_ms", "generator_share", "budget_ms", "candidates"} and, for
        the record, the router's and the generator's own accuracy and p50 on the same data.

    Raises:
        InputError: lists of different lengths, or no data.
    """
    n = len(router_calls)
    if not n or not (len(generator_calls) == len(correct_router) == len(correct_generator) == n):
        raise InputError("choose_threshold needs one router call, generator call and verdict per utterance",
                         field="calls")
    confidence = np.array([c.confidence if c.understood else -1.0 for c in router_calls])
    router_ms = np.array([c.latency_ms for c in router_calls])
    generator_ms = np.array([c.latency_ms for c in generator_calls])
    ok_router, ok_generator = np.asarray(correct_router, bool), np.asarray(correct_generator, bool)
    candidates = sorted({0.0, 1.01, *(float(c) for c in confidence if c >= 0)})
    rows = []
    for t in candidates:
        routed = confidence < t
        accuracy = float(np.mean(np.where(routed, ok_generator, ok_router)))
        latency = router_ms + np.where(routed, generator_ms, 0.0)
        rows.append({"threshold": t, "accuracy": accuracy, "p50_ms": float(np.median(latency)),
                     "generator_share": float(routed.mean())})
    allowed = [r for r in rows if latency_budget_ms is None or r["p50_ms"] <= latency_budget_ms] or \
        [min(rows, key=lambda r: r["p50_ms"])]
    best = max(allowed, key=lambda r: (r["accuracy"], -r["p50_ms"]))
    return {"threshold": best["threshold"], "accuracy": best["accuracy"],
            "p50_ms": best["p50_ms"], "generator_share": best["generator_share"], "budget_ms": latency_budget_ms,
            "router": {"accuracy": float(ok_router.mean()), "p50_ms": float(np.median(router_ms))},
            "generator": {"accuracy": float(ok_generator.mean()), "p50_ms": float(np.median(router_ms + generator_ms))},
            "samples": n, "candidates": len(rows)}
