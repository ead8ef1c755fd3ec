"""The one generation loop for decoders on every backend, and tool calls that always parse.

    from edgeagent.generate import load_decoder, generate, stream, Tool, call_tool

    with load_decoder("smollm2-ir") as model:          # an IR folder, an artifact or a Session
        result = generate(model, [{"role": "user", "content": "Hi"}], max_new_tokens=32)
        print(result.text, result.stop_reason, result.timings.decode_tokens_per_second)

The loop talks to the model only through `Session.run`, so ONNX Runtime, OpenVINO and
TensorRT share it. Needs `tokenizers` and `jinja2`; grammars need `llguidance`, tools
`jsonschema`. Importing this package imports none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "generate": "edgeagent.generate.loop",
    "stream": "edgeagent.generate.loop",
    "GenerationResult": "edgeagent.generate.loop",
    "GenerationTimings": "edgeagent.generate.loop",
    "GenerationStream": "edgeagent.generate.loop",
    "Chunk": "edgeagent.generate.loop",
    "StopReason": "edgeagent.generate.loop",
    "GenerationOptions": "edgeagent.generate.options",
    "Decoder": "edgeagent.generate.decoder",
    "DecoderLayout": "edgeagent.generate.decoder",
    "KVCache": "edgeagent.generate.decoder",
    "DecoderCache": "edgeagent.generate.decoder",
    "load_decoder": "edgeagent.generate.decoder",
    "DecoderAssets": "edgeagent.generate.assets",
    "Grammar": "edgeagent.generate.grammar",
    "Tool": "edgeagent.generate.tools",
    "ParsedToolCall": "edgeagent.generate.tools",
    "ToolCallResult": "edgeagent.generate.tools",
    "ToolRegistry": "edgeagent.generate.tools",
    "call_tool": "edgeagent.generate.tools",
    "PromptTooLong": "edgeagent.generate.errors",
    "NoChatTemplate": "edgeagent.generate.errors",
    "ToolSchemaError": "edgeagent.generate.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .assets import DecoderAssets
    from .decoder import Decoder, DecoderCache, DecoderLayout, KVCache, load_decoder
    from .errors import NoChatTemplate, PromptTooLong, ToolSchemaError
    from .grammar import Grammar
    from .loop import (Chunk, GenerationResult, GenerationStream, GenerationTimings, StopReason,
                       generate, stream)
    from .options import GenerationOptions
    from .tools import ParsedToolCall, Tool, ToolCallResult, ToolRegistry, call_tool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeagent.generate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


# `edgeagent.generate(...)`, as the issue spells it, next to `edgeagent.generate.generate`.
from .._callable_module import make_callable  # noqa: E402

make_callable(__name__, "generate")
