"""Tools declared with JSON schemas, and tool calls that always parse.

A `Tool` is a name, a description and a JSON schema of its arguments, checked against the
Draft 2020-12 meta-schema. A `ToolRegistry` turns its tools into one grammar — the output is
`{"name": <one tool's name>, "arguments": <that tool's arguments>}` — which llguidance enforces
token by token, so a finished generation always parses and validates. `call_tool` generates one
call; a generation that ends before the grammar is complete (the token budget ran out) returns
no call and says why, never a half-parsed one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InputError
from .errors import ToolSchemaError
from .grammar import Grammar
from .loop import GenerationResult, ModelSource, StopReason, generate

# The function-name rule OpenAI-style tool declarations use (and chat templates expect).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def _validator(schema: Mapping[str, Any]):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _frozen(value: Any) -> Any:
    """A read-only deep copy of JSON data, so a frozen Tool cannot change under its grammar."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class Tool:
    """A tool the model may call.

    Attributes:
        name: letters, digits, `_`, `.` or `-`, starting with a letter or `_`, at most 64.
        description: what the tool does, shown to the model through the chat template.
        parameters: a JSON schema (Draft 2020-12) of the arguments object; its type must be
            "object" (default: an object with no properties).

    Raises:
        ToolSchemaError: a bad name, a description that is not a string, parameters that are
            not JSON data, not a valid JSON schema, or not of type object.
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": False})

    def __post_init__(self) -> None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ToolSchemaError(str(self.name), "the name must match [A-Za-z_][A-Za-z0-9_.-]{0,63}")
        if not isinstance(self.description, str):
            raise ToolSchemaError(self.name, f"the description must be a string, got "
                                  f"{type(self.description).__name__}")
        if not isinstance(self.parameters, Mapping):
            raise ToolSchemaError(self.name, f"parameters must be a JSON schema (a dict), got "
                                  f"{type(self.parameters).__name__}")
        try:
            plain = json.loads(json.dumps(_thawed(self.parameters)))
        except (TypeError, ValueError) as exc:
            raise ToolSchemaError(self.name, f"parameters are not JSON data: {exc}") from None
        try:
            Draft202012Validator.check_schema(plain)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ToolSchemaError(self.name, f"parameters are not a valid JSON Schema (Draft "
                                  f"2020-12) at {where}: {exc.message}") from None
        if plain.get("type") != "object":
            raise ToolSchemaError(self.name, "parameters must be a schema of type \"object\" (the "
                                  f"arguments are named), got type {plain.get('type')!r}")
        object.__setattr__(self, "parameters", _frozen(plain))

    def schema(self) -> dict[str, Any]:
        """The parameters schema as a plain dict (a copy)."""
        return _thawed(self.parameters)

    def declaration(self) -> dict[str, Any]:
        """The `{"type": "function", "function": {...}}` form chat templates render."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.schema()}}

    def errors(self, arguments: Any) -> list[str]:
        """Why `arguments` do not validate against the parameters (empty when they do)."""
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in _validator(self.schema()).iter_errors(arguments)]


@dataclass(frozen=True)
class ParsedToolCall:
    """A parsed, validated call: the tool's name and its arguments (read-only JSON data).

    A task's reader maps it onto the agent's `ToolCall` (intent = name, slots = arguments).
    """

    name: str
    arguments: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": _thawed(self.arguments)}


@dataclass(frozen=True)
class ToolCallResult:
    """What `call_tool` produced.

    Attributes:
        call: the parsed call, or None when the generation did not finish one.
        complete: whether `call` is set.
        reason: "grammar_complete" for a call, else why there is none (e.g. "max_new_tokens:
            the token budget ran out inside an unfinished call").
        generation: the generation itself (text, tokens, timings with fast-forward counts).
    """

    call: ParsedToolCall | None
    complete: bool
    reason: str
    generation: GenerationResult


class ToolRegistry:
    """Tools the model may call, as one grammar and one parser.

    Args:
        tools: Tool objects (at least one, names unique).

    Raises:
        ToolSchemaError: no tools, a duplicate name, or an item that is not a Tool.
    """

    def __init__(self, tools: Iterable[Tool]) -> None:
        tools = tuple(tools)
        if not tools:
            raise ToolSchemaError("(registry)", "a registry needs at least one tool")
        for item in tools:
            if not isinstance(item, Tool):
                raise ToolSchemaError(str(item)[:40], f"registry items must be Tool objects, got "
                                      f"{type(item).__name__}")
        names = [t.name for t in tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ToolSchemaError(duplicates[0], f"declared more than once: {duplicates}")
        self.tools = tools
        self._by_name = {t.name: t for t in tools}
        self._grammar: Grammar | None = None

    def __len__(self) -> int:
        return len(self.tools)

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"no tool named {name!r}; the registry has {sorted(self._by_name)}",
                             field="tools") from None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    def declarations(self) -> list[dict[str, Any]]:
        """Every tool in the form chat templates render (`tools=` of apply_chat_template)."""
        return [t.declaration() for t in self.tools]

    def call_schema(self) -> dict[str, Any]:
        """The JSON schema of one call: anyOf, per tool, {name: const, arguments: parameters}."""
        return {"anyOf": [{"type": "object",
                           "properties": {"name": {"const": t.name}, "arguments": t.schema()},
                           "required": ["name", "arguments"], "additionalProperties": False}
                          for t in self.tools]}

    def grammar(self) -> Grammar:
        """The llguidance grammar of one call (built once).

        Raises:
            ToolSchemaError: llguidance cannot enforce a tool's schema (checked per tool, so the
                error names it).
        """
        if self._grammar is None:
            from .grammar import _llguidance

            ll = _llguidance()
            for tool in self.tools:  # one by one, so an error names the tool it comes from
                try:
                    single = Grammar.json_schema(ToolRegistry([tool]).call_schema())
                except InputError as exc:
                    raise ToolSchemaError(tool.name, str(exc)) from None
                is_error, messages = ll.LLMatcher.validate_grammar_with_warnings(single.source)
                if is_error:
                    raise ToolSchemaError(tool.name, "llguidance cannot enforce its parameters "
                                          f"schema: {'; '.join(messages)}")
            self._grammar = Grammar.json_schema(self.call_schema())
        return self._grammar

    def parse(self, text: str) -> tuple[ParsedToolCall | None, str]:
        """Parse and validate one call; (call, "") or (None, why not)."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"not JSON: {exc}"
        if not isinstance(value, dict) or set(value) != {"name", "arguments"}:
            return None, "not an object with exactly the keys name and arguments"
        tool = self._by_name.get(value["name"])
        if tool is None:
            return None, f"unknown tool {value['name']!r}"
        errors = tool.errors(value["arguments"])
        if errors:
            return None, f"arguments do not validate against {tool.name}'s parameters: {errors[:3]}"
        return ParsedToolCall(tool.name, _frozen(value["arguments"])), ""


def _registry(tools: ToolRegistry | Sequence[Tool] | Tool) -> ToolRegistry:
    if isinstance(tools, ToolRegistry):
        return tools
    if isinstance(tools, Tool):
        return ToolRegistry([tools])
    return ToolRegistry(tools)


def call_tool(model: ModelSource, prompt_or_messages: Any, tools: ToolRegistry | Sequence[Tool] | Tool,
              *, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int | None = None,
              top_p: float | None = None, seed: int | None = None, declare: bool = True,
              assets: Any = None) -> ToolCallResult:
    """Generate one tool call that parses and validates against one tool's schema.

    Args:
        model: as `generate` (a Decoder from `load_decoder` for repeated calls).
        prompt_or_messages: a string or a list of messages (one prompt, not a batch).
        tools: a ToolRegistry, Tools, or one Tool.
        max_new_tokens: token budget of the call (default 256).
        temperature, top_k, top_p, seed: sampling, as `generate` (default greedy).
        declare: render the tools into the chat template for messages (default True). A
            template that reads no `tools` variable (SmolLM2's) renders nothing: check
            `DecoderAssets.chat_template_renders_tools` and describe the tools in a system
            message instead.
        assets: as `generate`.

    Returns:
        A ToolCallResult: `call` when the grammar completed; otherwise `call` is None and
        `reason` says why (the budget or the model's length ran out mid-call).

    Raises:
        ToolSchemaError: an invalid tool or registry.
        InputError, PromptTooLong, NoChatTemplate: as `generate`.
    """
    registry = _registry(tools)
    if not isinstance(prompt_or_messages, str) and prompt_or_messages and all(
            isinstance(p, (str, list, tuple)) for p in prompt_or_messages):
        raise InputError("call_tool takes one prompt; call it once per prompt (or use generate "
                         "with grammar=registry for a batch)", field="prompt")
    messages = not isinstance(prompt_or_messages, str)
    result = generate(model, prompt_or_messages, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                      grammar=registry.grammar(), tools=registry if declare and messages else None,
                      assets=assets)
    if result.stop_reason is not StopReason.GRAMMAR_COMPLETE:
        return ToolCallResult(None, False, f"{result.stop_reason}: generation ended inside an "
                              "unfinished call", result)
    call, why = registry.parse(result.text)
    if call is None:
        # The grammar guarantees a parse; reaching this means llguidance and jsonschema
        # disagree about the schema. Say so rather than return a call that does not validate.
        return ToolCallResult(None, False, f"grammar_complete but the call is invalid ({why})", result)
    return ToolCallResult(call, True, str(StopReason.GRAMMAR_COMPLETE), result)
