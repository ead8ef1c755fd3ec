"""The `text-generation` task: a generative decoder that answers an utterance with one tool call.

The model reads the utterance as a chat (a system prompt, then the user's words) and writes one
call, `{"name": TOOL, "arguments": {...}}`, under a grammar built from the task's tools
(`generate.ToolRegistry`): the answer always parses and validates against one tool's schema.
The tool's name is the intent, its arguments the slots, so the agent, serve and the CLI handle a
generative answer as they handle the router's. A model that runs out of its token budget inside
a call answers `not_understood` with the reason, never a half-parsed call.

Generative answers carry no calibrated probability: `confidence` is 1.0 for a completed call
(the cascade thresholds the router's calibrated confidence, not this one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError, UnsupportedModel
from .base import NOT_UNDERSTOOD, Head, ToolCall, fill_context, require_labels
from .text import clean_text, in_script, SCRIPTS

NAME = "text-generation"
DEFAULT_MAX_NEW_TOKENS = 64
MAX_TEXT_CHARS = 500  # an utterance longer than this is cut (a voice command is a sentence or two)


class TextGenerationTask:
    """Tool calls written by a decoder under a grammar.

    Args:
        tools: the tools as declared (`Tool.declaration()`: name, description, parameters); each
            tool's name is an intent. A tool named `not_understood` lets the model decline.
        system_prompt: the chat's first message (default none).
        max_new_tokens: the token budget of one call (default 64).
        language: the ISO 639-1 code of the model's language (default "en"): text with no letter
            of its script is not understood without running the model.
        intent_slots: intent → the slots it takes, for a caller's context (default: the tools'
            argument names).

    Raises:
        InputError: no tools, duplicate names, a budget out of range.
    """

    name = NAME
    primary_metric = "exact_match"
    batch_invariant = True  # one call per utterance: nothing depends on batch mates

    def __init__(self, tools: Sequence[Mapping[str, Any]], *, system_prompt: str | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, language: str | None = "en",
                 intent_slots: Mapping[str, Sequence[str]] | None = None) -> None:
        if not isinstance(tools, (list, tuple)) or not tools or not all(isinstance(t, Mapping) for t in tools):
            raise InputError("tools must be a non-empty list of {name, description, parameters}", field="tools")
        # Plain {name, description, parameters}, or chat templates' {"type": "function", "function": {...}}.
        self.tools = [{k: v for k, v in dict(t.get("function", t)).items() if k in ("name", "description", "parameters")}
                      for t in tools]
        self.intents = require_labels([str(t.get("name")) for t in self.tools], "tools")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InputError("system_prompt must be a string", field="system_prompt")
        if type(max_new_tokens) is not int or not 1 <= max_new_tokens <= 4096:
            raise InputError(f"max_new_tokens must be an integer from 1 to 4096, got {max_new_tokens!r:.40}",
                             field="max_new_tokens")
        self.system_prompt, self.max_new_tokens, self.language = system_prompt, max_new_tokens, language
        self.intent_slots = {str(k): tuple(v) for k, v in (intent_slots or {
            t["name"]: tuple((t.get("parameters") or {}).get("properties", {})) for t in self.tools}).items()}
        self._registry = None

    def registry(self):
        """The task's `generate.ToolRegistry` (built once; its grammar too)."""
        if self._registry is None:
            from ..generate.tools import Tool, ToolRegistry

            self._registry = ToolRegistry(Tool(t["name"], description=t.get("description", ""),
                                               parameters=t.get("parameters") or {"type": "object"})
                                          for t in self.tools)
        return self._registry

    def messages(self, text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": text}]

    # -- the Task protocol ------------------------------------------------------------------

    @property
    def heads(self) -> tuple[Head, ...]:
        return ()  # a decoder's only output is its logits; training is causal-LM loss

    def metrics(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None, **context: Any) -> dict[str, float]:
        raise InputError("text-generation models are scored on their calls (tasks.text_generation.score_calls), "
                         "not on logits", field="task")

    def training_metric(self, predictions, examples) -> float:
        raise InputError("text-generation models train with edgeagent.causal.finetune_causal_lm", field="task")

    def export_spec(self):
        raise UnsupportedModel("decoders export with edgeagent.export_causal_lm "
                               "(`edgeagent export SOURCE --task text-generation`)")

    def reader(self, assets: Any, **options: Any) -> GenerativeReader:
        """A reader on a decoder's assets (`generate.DecoderAssets`: tokenizer, chat template)."""
        options.pop("threshold", None)  # generative answers are not thresholded
        return GenerativeReader(self, assets, **options)

    def check_outputs(self, outputs: Sequence[Any], where: str) -> None:
        if "logits" not in {spec.name for spec in outputs}:
            raise ArtifactError(f"{where}: a text-generation model needs a logits output; its outputs are "
                                f"{sorted(spec.name for spec in outputs)}")

    def apply_context(self, call: ToolCall, context: Mapping[str, str]) -> ToolCall:
        return fill_context(call, context, self.intent_slots)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tools": self.tools, "system_prompt": self.system_prompt,
                "max_new_tokens": self.max_new_tokens, "language": self.language,
                "intent_slots": {k: list(v) for k, v in self.intent_slots.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TextGenerationTask:
        return cls(data.get("tools"), system_prompt=data.get("system_prompt"),
                   max_new_tokens=data.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
                   language=data.get("language", "en"), intent_slots=data.get("intent_slots"))


class GenerativeReader:
    """Text → ToolCall with a decoder Session: the chat prompt, then one grammar-constrained call."""

    def __init__(self, task: TextGenerationTask, assets: Any) -> None:
        self.task, self.assets = task, assets
        self.scripts = SCRIPTS.get(str(task.language).lower()) if task.language else None
        self._decoders: dict[int, Any] = {}

    def _decoder(self, session: Any):
        from ..generate.decoder import Decoder

        decoder = self._decoders.get(id(session))
        if decoder is None or decoder.session is not session:
            decoder = self._decoders[id(session)] = Decoder(session, self.assets)
        return decoder

    def act(self, session: Any, text: str) -> ToolCall:
        from ..generate.tools import call_tool

        start = time.perf_counter()
        raw = text if isinstance(text, str) else ""
        cleaned = clean_text(raw) if raw else ""
        if not cleaned.strip() or not in_script(cleaned, self.scripts):
            return ToolCall(NOT_UNDERSTOOD, text=raw, latency_ms=(time.perf_counter() - start) * 1e3,
                            reason="no text the model's language could mean")
        truncated = len(cleaned) > MAX_TEXT_CHARS
        cleaned = cleaned[:MAX_TEXT_CHARS]
        from ..errors import PromptTooLong

        try:
            result = call_tool(self._decoder(session), self.task.messages(cleaned), self.task.registry(),
                               max_new_tokens=self.task.max_new_tokens, declare=False)
        except PromptTooLong as exc:
            return ToolCall(NOT_UNDERSTOOD, text=raw, latency_ms=(time.perf_counter() - start) * 1e3,
                            truncated=True, reason=f"prompt_too_long: {exc}")
        latency = (time.perf_counter() - start) * 1e3
        if result.call is None:
            return ToolCall(NOT_UNDERSTOOD, text=raw, latency_ms=latency, truncated=truncated, reason=result.reason)
        arguments = {k: v for k, v in dict(result.call.arguments).items()}
        return ToolCall(result.call.name, arguments, 1.0, latency, raw, truncated)

    def act_batch(self, session: Any, texts: Sequence[str]) -> list[ToolCall]:
        return [self.act(session, text) for text in texts]


def slot_value_matches(predicted: Any, gold: Any) -> bool:
    """Numbers as numbers (30 == 30.0), strings case- and edge-space-insensitively."""
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        try:
            return abs(float(predicted) - float(gold)) < 1e-6
        except (TypeError, ValueError):
            return False
    return str(predicted).strip().lower() == str(gold).strip().lower()


def call_matches(call: ToolCall, intent: str, slots: Mapping[str, Any]) -> bool:
    """Exact match: the intent, and every slot read from the text equal to the gold one (slots a
    caller's context filled are not the model's reading and are left out)."""
    read = {k: v for k, v in call.slots.items() if k not in call.context}
    return call.intent == intent and set(read) == set(slots) and all(
        slot_value_matches(read[k], slots[k]) for k in slots)


def score_calls(calls: Sequence[ToolCall], examples: Sequence[Any]) -> dict[str, float]:
    """Intent accuracy and exact match (`call_matches`) of calls against examples with `.intent`
    and `.slots` (an `ha_intents.Example`, or a mapping with those keys)."""
    if len(calls) != len(examples) or not calls:
        raise InputError(f"{len(calls)} calls for {len(examples)} examples", field="calls")

    def gold(e: Any) -> tuple[str, Mapping[str, Any]]:
        return (e["intent"], e.get("slots") or {}) if isinstance(e, Mapping) else (e.intent, e.slots)

    pairs = [(c, *gold(e)) for c, e in zip(calls, examples)]
    return {"intent_accuracy": float(np.mean([c.intent == i for c, i, _ in pairs])),
            "exact_match": float(np.mean([call_matches(c, i, s) for c, i, s in pairs])), "samples": len(calls)}
