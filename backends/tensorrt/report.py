"""What TensorRT said, made readable (no GPU needed): parser errors, build errors, layer precisions.

TensorRT names the layers its ONNX parser creates after the ONNX nodes, and names fused layers
after all their nodes ("a + b", "PWN(a, b)", "{ForeignNode[a...b]}"); `onnx_nodes_in` maps a
layer name back to the ONNX nodes it holds, so an error can name both.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_PRECISIONS = (("int8", "INT8"), ("fp8", "FP8"), ("int4", "INT4"), ("bf16", "BF16"), ("half", "FP16"),
               ("fp16", "FP16"), ("float16", "FP16"), ("int32", "INT32"), ("int64", "INT64"),
               ("bool", "BOOL"), ("fp32", "FP32"), ("float", "FP32"))
# Layers that move data rather than compute: they carry no precision of their own.
_BOOKKEEPING = frozenset({"Reformat", "Constant", "Shuffle", "NoOp", "Identity"})


def tensor_precision(format_datatype: str) -> str | None:
    """'Row major linear FP16 format' → 'FP16'; None where TensorRT gives none (dynamic shapes)."""
    lowered = format_datatype.lower()
    for token, name in _PRECISIONS:
        if re.search(rf"(?<![a-z0-9]){token}(?![a-z0-9])", lowered):
            return name
    return None


def layer_report(engine_information: str | Mapping[str, Any], node_names: Sequence[str] = ()) -> dict[str, Any]:
    """Per-layer precision from the engine inspector's JSON (ProfilingVerbosity.DETAILED).

    Returns:
        {"layers": [{"name", "type", "precision", "onnx_nodes"}], "precisions": {precision: count}}
        where a layer's precision is that of its inputs and outputs (or "MIXED[...]"), and the
        counts leave out layers that only move data.
    """
    info = json.loads(engine_information) if isinstance(engine_information, str) else engine_information
    rows = []
    counts: collections.Counter[str] = collections.Counter()
    for layer in info.get("Layers", []):
        if isinstance(layer, str):  # ProfilingVerbosity.LAYER_NAMES_ONLY gives names alone
            rows.append({"name": layer, "type": None, "precision": "unknown",
                         "onnx_nodes": onnx_nodes_in(layer, node_names)})
            continue
        tensors = [*layer.get("Inputs", ()), *layer.get("Outputs", ())]
        found = {p for t in tensors if (p := tensor_precision(str(t.get("Format/Datatype", ""))))}
        precision = next(iter(found)) if len(found) == 1 else (f"MIXED[{','.join(sorted(found))}]" if found
                                                                 else "unknown")
        name = str(layer.get("Name", ""))
        rows.append({"name": name, "type": layer.get("LayerType"), "precision": precision,
                     "onnx_nodes": onnx_nodes_in(name, node_names)})
        if layer.get("LayerType") not in _BOOKKEEPING:
            counts[precision] += 1
    return {"layers": rows, "precisions": dict(sorted(counts.items()))}


def onnx_nodes_in(layer_name: str, node_names: Iterable[str]) -> list[str]:
    """The ONNX nodes whose whole names occur in a TensorRT layer name, in order, without overlaps."""
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for name in sorted({n for n in node_names if n}, key=len, reverse=True):
        for match in re.finditer(re.escape(name), layer_name):
            span = match.span()
            before = layer_name[span[0] - 1] if span[0] else " "
            after = layer_name[span[1]] if span[1] < len(layer_name) else " "
            # Whole names only: "/l0/MatMul" must not match inside "/l0/MatMul_1".
            if (before.isalnum() or before == "_") or (after.isalnum() or after == "_"):
                continue
            if not any(s < span[1] and span[0] < e for s, e in taken):
                taken.append(span)
                found.append((span[0], name))
                break
    return [name for _, name in sorted(found)]


def parser_error_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One message naming each ONNX node the parser rejected: index, name, operator, reason."""
    parts = []
    for error in errors:
        where = []
        if error.get("node", -1) is not None and int(error.get("node", -1)) >= 0:
            where.append(f"node {error['node']}")
        if error.get("node_name"):
            where.append(repr(error["node_name"]))
        if error.get("node_operator"):
            where.append(f"(op {error['node_operator']})")
        parts.append(f"{' '.join(where) or 'the graph'}: {error.get('desc', 'unknown error')}")
    return "TensorRT's ONNX parser rejected " + "; ".join(parts)


def parser_errors(parser) -> list[dict[str, Any]]:
    """The parser's errors as plain dicts (older TensorRT lacks node_name/node_operator)."""
    records = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        record = {"desc": error.desc(), "code": str(error.code()), "node": error.node()}
        for field in ("node_name", "node_operator"):
            method = getattr(error, field, None)
            if method is not None:
                record[field] = method()
        records.append(record)
    return records


def build_error_message(log_errors: Sequence[str], node_names: Sequence[str]) -> str:
    """TensorRT's build errors, each with the layer it names and the ONNX nodes that layer holds."""
    lines = []
    for message in log_errors:
        nodes = onnx_nodes_in(message, node_names)
        lines.append(message + (f" [ONNX node{'s' if len(nodes) > 1 else ''}: {', '.join(nodes)}]" if nodes else ""))
    if not lines:
        lines = ["the builder returned no engine and logged no error"]
    return "TensorRT could not build the engine: " + " | ".join(lines)
