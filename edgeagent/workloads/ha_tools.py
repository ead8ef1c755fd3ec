"""Home Assistant's intents as tools a generative model calls: the registry, the prompt and the
one canonical text of a call.

One tool per intent of `ha-intents` (the intent's name is the tool's), its arguments the slots
the intent's templates fill, typed as the router's reader produces them (closed lists as enums,
levels as integers, free names as strings); `not_understood` is a tool without arguments, so a
generative model can decline as the router does. The canonical text of a call is what the
grammar-constrained decoder writes (`generate.grammar.JSON_OPTIONS`: ", " and ": " separators,
"name" before "arguments", arguments in the schema's order): training targets use it, so a
fine-tuned model's greedy answer is also the one the grammar admits.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from ..tasks.base import NOT_UNDERSTOOD

SYSTEM_PROMPT = ("You control a smart home. Answer the user's request with exactly one tool call as JSON "
                 '{"name": ..., "arguments": ...}; answer not_understood when the request is not a home command.')
MAX_TEXT = 80  # a free slot value's characters at most (names, areas, list items, messages)

_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
_LEVEL = {"type": "integer", "minimum": 0, "maximum": 100}
_DURATION = {"type": "integer", "minimum": 0, "maximum": 10_000}
# Slots that are numbers or levels, whatever their intent.
_NUMERIC = {"brightness": _LEVEL, "percentage": _LEVEL, "volume_level": _LEVEL, "position": _LEVEL,
            "temperature": {"type": "number", "minimum": -100, "maximum": 10_000},
            **{k: _DURATION for k in ("hours", "minutes", "seconds", "start_hours", "start_minutes",
                                       "start_seconds")}}


def slot_schema(slot: str, closed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one slot's value (closed lists from the templates become enums)."""
    if slot in _NUMERIC:
        return dict(_NUMERIC[slot])
    if slot == "state":  # on/off, open/closed, but also a zone a person is in ("the gym"): free text
        return dict(_TEXT)
    if slot == "volume_step":  # "up" / "down", or a number of steps (the templates' range list)
        return {"anyOf": [{"enum": ["down", "up"]}, {"type": "integer", "minimum": -100, "maximum": 100}]}
    values = sorted({v for v in closed.get(slot, {}).values()}, key=str)
    strings = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if strings and numbers:  # volume_step: "up" / "down" or a number of steps
        return {"anyOf": [{"enum": strings}, {"type": "integer", "minimum": -100, "maximum": 100}]}
    if strings:
        return {"enum": strings}
    return dict(_TEXT)


@functools.cache
def tool_schemas(language: str = "en") -> tuple[tuple[str, dict[str, Any]], ...]:
    """(intent, parameters schema) for every intent of the workload's label space, in its order."""
    from .ha_intents import closed_list_values, intent_slots, label_space

    closed = closed_list_values(language)
    slots = intent_slots(language)
    out = []
    for intent in label_space(language)[0]:
        # Every command may say where (Home Assistant's area and floor targets), even where the
        # intent's own templates do not: phrasings do ("mute the tv in the attic").
        names = sorted({*slots.get(intent, ()), "area", "floor"}) if intent != NOT_UNDERSTOOD else []
        out.append((intent, {"type": "object", "properties": {s: slot_schema(s, closed) for s in names},
                             "additionalProperties": False}))
    return tuple(out)


def tool_registry(language: str = "en"):
    """A `generate.ToolRegistry` of Home Assistant's intents (and `not_understood`)."""
    from ..generate.tools import Tool, ToolRegistry

    return ToolRegistry(Tool(intent, description=describe(intent), parameters=parameters)
                        for intent, parameters in tool_schemas(language))


def describe(intent: str) -> str:
    if intent == NOT_UNDERSTOOD:
        return "The request is not a home command, or it cannot be understood."
    words = intent.removeprefix("Hass")
    spaced = "".join(f" {c.lower()}" if c.isupper() else c for c in words).strip()
    return f"Home Assistant intent {intent}: {spaced}."


def messages(text: str) -> list[dict[str, str]]:
    """The chat a generative agent is asked: the system prompt, then the utterance."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


def call_text(intent: str, slots: Mapping[str, Any], language: str = "en") -> str:
    """The canonical text of a call: what the constrained decoder writes for it, byte for byte."""
    order = {name: i for i, name in enumerate(dict(tool_schemas(language)).get(intent, {}).get("properties", {}))}
    arguments = {k: slots[k] for k in sorted(slots, key=lambda k: (order.get(k, len(order)), k))}
    return json.dumps({"name": intent, "arguments": arguments}, ensure_ascii=False, separators=(", ", ": "))


def generative_task(language: str = "en", **options: Any):
    """The `text-generation` task of Home Assistant's intents: these tools, the system prompt, the
    intents' slots for a caller's context (`options`: max_new_tokens)."""
    from ..tasks.text_generation import TextGenerationTask
    from .ha_intents import intent_slots

    return TextGenerationTask(tool_registry(language).declarations(), system_prompt=SYSTEM_PROMPT, language=language,
                              intent_slots={k: tuple(v) for k, v in intent_slots(language).items()}, **options)
