"""The decoder IR rebuilt on ONNX Runtime's fused contrib operators, for the onnxruntime backend.

The IR is standard ONNX from torch's exporter: about 80 nodes a layer (RoPE slices, cache
concats, `repeat_kv` expands, mask arithmetic), which ONNX Runtime executes one kernel at a time;
at a few microseconds of dispatch a node that costs a small model more than its arithmetic. This
module writes the same model, with the same weights and the same inputs and outputs, on
`com.microsoft` operators ONNX Runtime's CPU provider implements: SimplifiedLayerNormalization /
SkipSimplifiedLayerNormalization (RMSNorm with the residual add), GroupQueryAttention
(grouped-query attention over the KV cache with the rotary embedding inside, causal, at the
positions `position_ids` gives, with the padding mask as an attention bias), one fused QKV and one fused gate/up MatMul a layer — the graph shape
onnxruntime-genai's model builder writes, built from the IR instead of from the checkpoint.

The weights are found by the module each MatMul came from (torch's `name_scopes` metadata), the
rotary tables from the IR's own `inv_freq`, the norm epsilon and activation from the IR folder's
config.json. Only what is understood is rebuilt: Llama and Qwen2 layers with SiLU gates and the
default or Llama-3 RoPE; anything else raises `FusionUnsupported` with the reason, and the
caller keeps the standard graph. The result is then proved against the IR in ONNX Runtime on a
probe that covers left padding, single-token decode and a multi-token step after a cache
(`check_fused_parity`).

The contract is unchanged: `input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.*`
in; `logits`, `present.{i}.*` out, dynamic batch, sequence and past length; a position is
whatever `position_ids` says, so left padding keeps its meaning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnsupportedModel

FUSED_FORMAT = "onnxruntime-contrib/1"
_MS = "com.microsoft"
_ROPE_TYPES = frozenset({"default", "llama3"})  # inv_freq carries the scaling; attention scale stays 1
_PROBE_ATOL = 1e-3


class FusionUnsupported(UnsupportedModel):
    """The IR holds something the fused graph does not rebuild; the standard graph is kept."""


@dataclass(frozen=True)
class FusedGraph:
    """A fused decoder graph and what it was built from.

    Attributes:
        proto: the ModelProto (opset of the IR plus com.microsoft 1).
        nodes: node count of the fused graph.
        source_nodes: node count of the IR's graph.
        ops: count of each contrib operator written.
    """

    proto: Any
    nodes: int
    source_nodes: int
    ops: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FUSED_FORMAT, "nodes": self.nodes, "source_nodes": self.source_nodes,
                "ops": dict(self.ops)}


def _config(ir_folder: Path) -> dict[str, Any]:
    path = ir_folder / "config.json"
    if not path.is_file():
        raise FusionUnsupported("the IR folder has no config.json (norm epsilon, activation, RoPE type)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FusionUnsupported(f"config.json is not JSON ({exc})") from None


def _rope_type(config: Mapping[str, Any]) -> str:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        return "unknown"
    return str(params.get("rope_type") or params.get("type") or "default")


def build_fused_decoder(model_path: str | Path, metadata: Mapping[str, Any]) -> FusedGraph:
    """Rebuild the IR at MODEL_PATH (a decoder IR's model.onnx) on ONNX Runtime contrib operators.

    Args:
        model_path: the IR's model.onnx; its folder holds config.json.
        metadata: the IR's ir.json.

    Returns:
        The FusedGraph.

    Raises:
        FusionUnsupported: an architecture, activation, RoPE type or layer the builder does not
            rebuild, or a weight it cannot find; the message says which.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .quantize_ort import _module_path, _weight_of

    model_path = Path(model_path)
    arch = str(metadata.get("architecture"))
    if arch not in ("llama", "qwen2"):
        raise FusionUnsupported(f"architecture {arch!r}: the fused graph is built for llama and qwen2")
    config = _config(model_path.parent)
    if config.get("hidden_act", "silu") != "silu":
        raise FusionUnsupported(f"hidden_act {config.get('hidden_act')!r}: the fused MLP is SiLU-gated")
    if _rope_type(config) not in _ROPE_TYPES:
        raise FusionUnsupported(f"RoPE type {_rope_type(config)!r}: only {sorted(_ROPE_TYPES)} are rebuilt")
    if config.get("use_sliding_window") or any(t != "full_attention" for t in config.get("layer_types") or []):
        raise FusionUnsupported("sliding-window layers: the fused attention is full causal attention")
    eps = float(config.get("rms_norm_eps", 1e-6))
    layers, heads, kv_heads = (int(metadata[k]) for k in ("num_layers", "num_heads", "num_kv_heads"))
    head_dim, max_length = int(metadata["head_dim"]), int(metadata["max_length"])

    source = onnx.load(str(model_path))
    graph = source.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    by_suffix = {name.removeprefix("inner."): name for name in inits}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    weights: dict[str, np.ndarray] = {}
    tied_head: str | None = None
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        found = _weight_of(node, inits, producers)
        module = _module_path(node)
        if found is None or not module:
            continue
        kind, _, name = found
        if module == "lm_head" and kind == "tied":
            tied_head = name
            continue
        if module in weights:
            raise FusionUnsupported(f"two MatMul weights come from module {module}")
        weights[module] = array(name) if kind == "constant" else array(name).T
    embedding = next((n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"
                      and n.input[0] in inits), None)
    if embedding is None:
        raise FusionUnsupported("no embedding Gather on input_ids")

    def weight(module: str) -> np.ndarray:
        if module not in weights:
            raise FusionUnsupported(f"no MatMul weight from module {module}")
        return weights.pop(module)

    def named(suffix: str) -> np.ndarray | None:
        return array(by_suffix[suffix]) if suffix in by_suffix else None

    def required(suffix: str) -> np.ndarray:
        value = named(suffix)
        if value is None:
            raise FusionUnsupported(f"no initializer {suffix}")
        return value

    new_inits: list[Any] = []
    nodes: list[Any] = []
    ops: dict[str, int] = {}

    def init(name: str, value: np.ndarray) -> str:
        value = np.asarray(value)  # np.ascontiguousarray would turn a scalar into shape (1,)
        new_inits.append(numpy_helper.from_array(value if value.flags.c_contiguous else value.copy(), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], *, domain: str = "", module: str = "",
             **attrs: Any) -> list[str]:
        made = helper.make_node(op, inputs, outputs, name=f"{module or 'model'}/{op}_{len(nodes)}",
                                domain=domain, **attrs)
        if module:  # quantize_ort reads the module a MatMul belongs to from torch's metadata key
            made.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=f"['inner.{module}', '{op}']")
        nodes.append(made)
        if domain:
            ops[op] = ops.get(op, 0) + 1
        return outputs

    def linear(x: str, module: str, w: np.ndarray, b: np.ndarray | None, out: str) -> str:
        y = node("MatMul", [x, init(f"{module}.weight", w)], [out if b is None else f"{out}.mm"],
                 module=module)[0]
        if b is not None:
            y = node("Add", [y, init(f"{module}.bias", b)], [out])[0]
        return y

    inv_freq = named("model.rotary_emb.inv_freq")
    if inv_freq is None:
        theta = float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))
        inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    inv_freq = inv_freq.astype(np.float32).reshape(-1)
    if inv_freq.size * 2 != head_dim:
        raise FusionUnsupported(f"inv_freq has {inv_freq.size} entries for head_dim {head_dim}: partial rotary")
    freqs = np.outer(np.arange(max_length, dtype=np.float32), inv_freq).astype(np.float32)
    cos, sin = init("rotary.cos_cache", np.cos(freqs)), init("rotary.sin_cache", np.sin(freqs))

    # Per-row lengths for GroupQueryAttention: every row is treated as full length (past + new);
    # padding is removed by the attention bias built from attention_mask, so left padding and
    # rows that stop early keep the IR's semantics.
    i64 = lambda name, values: init(name, np.asarray(values, np.int64))  # noqa: E731
    node("Shape", ["attention_mask"], ["mask.shape"])
    node("Shape", ["input_ids"], ["ids.shape"])
    node("Gather", ["mask.shape", i64("const.one_index", 1)], ["total.i64"], axis=0)
    node("Cast", ["total.i64"], ["total_sequence_length"], to=TensorProto.INT32)
    node("Slice", ["ids.shape", i64("const.zero", [0]), i64("const.one", [1])], ["batch.1d"])
    node("Slice", ["ids.shape", i64("const.one_b", [1]), i64("const.two", [2])], ["seq.1d"])
    node("Sub", ["total_sequence_length", init("const.one_i32", np.asarray(1, np.int32))], ["seqlen_minus_one"])
    node("Expand", ["seqlen_minus_one", "batch.1d"], ["seqlens_k"])
    # Every row's chunk is whole (no right padding), so each row's query count is the step's length;
    # given, it lets GroupQueryAttention take a multi-token step after a cache at any batch size.
    node("Cast", ["seq.1d"], ["seq.1d.i32"], to=TensorProto.INT32)
    node("Expand", ["seq.1d.i32", "batch.1d"], ["query_seqlens"])
    node("Cast", ["attention_mask"], ["mask.f"], to=TensorProto.FLOAT)
    node("Sub", [init("const.one_f", np.asarray(1.0, np.float32)), "mask.f"], ["mask.off"])
    node("Mul", ["mask.off", init("const.min_f", np.asarray(np.finfo(np.float32).min, np.float32))],
         ["mask.bias2d"])
    node("Unsqueeze", ["mask.bias2d", i64("const.axes12", [1, 2])], ["mask.bias4d"])
    node("Unsqueeze", ["total.i64", i64("const.axis0", [0])], ["total.i64.1d"])
    node("Concat", ["batch.1d", i64("const.one_c", [1]), "seq.1d", "total.i64.1d"], ["bias.shape"], axis=0)
    node("Expand", ["mask.bias4d", "bias.shape"], ["attention_bias"])

    embed = array(embedding)
    embed_name = init("model.embed_tokens.weight", embed)
    hidden = node("Gather", [embed_name, "input_ids"], ["embeds"], module="model.embed_tokens", axis=0)[0]
    residual: str | None = None

    def norm(x: str, gamma: np.ndarray, name: str) -> tuple[str, str]:
        """RMSNorm of x (plus the residual so far, fused): (normed, the new residual)."""
        g = init(f"{name}.weight", gamma)
        if residual is None:
            out = node("SimplifiedLayerNormalization", [x, g], [f"{name}.out"], module=name,
                       epsilon=eps, axis=-1, stash_type=1)[0]
            return out, x
        out, _, _, total = node("SkipSimplifiedLayerNormalization", [x, residual, g],
                                [f"{name}.out", "", "", f"{name}.residual"], domain=_MS, module=name,
                                epsilon=eps)
        return out, total

    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    for i in range(layers):
        p = f"model.layers.{i}"
        normed, residual = norm(hidden, required(f"{p}.input_layernorm.weight"), f"{p}.input_layernorm")
        projections = [f"{p}.self_attn.{n}_proj" for n in "qkv"]
        w_qkv = np.concatenate([weight(m) for m in projections], axis=1)
        biases = [named(f"{m}.bias") for m in projections]
        if any(b is not None for b in biases) and any(b is None for b in biases):
            raise FusionUnsupported(f"{p}: bias on some of q/k/v only")
        b_qkv = np.concatenate(biases) if biases[0] is not None else None
        if w_qkv.shape[1] != q_size + 2 * kv_size:
            raise FusionUnsupported(f"{p}: q/k/v widths {w_qkv.shape[1]} do not match the IR's heads")
        qkv = linear(normed, f"{p}.self_attn.qkv_proj", w_qkv, b_qkv, f"{p}.qkv")
        attn = node("GroupQueryAttention",
                    [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
                     "total_sequence_length", cos, sin, "position_ids", "attention_bias", "", "", "", "", "",
                     "query_seqlens"],
                    [f"{p}.attn", f"present.{i}.key", f"present.{i}.value"], domain=_MS,
                    module=f"{p}.self_attn", num_heads=heads, kv_num_heads=kv_heads, do_rotary=1,
                    rotary_interleaved=0, scale=float(head_dim ** -0.5))[0]
        attn_out = linear(attn, f"{p}.self_attn.o_proj", weight(f"{p}.self_attn.o_proj"),
                          named(f"{p}.self_attn.o_proj.bias"), f"{p}.attn_out")
        normed, residual = norm(attn_out, required(f"{p}.post_attention_layernorm.weight"),
                                f"{p}.post_attention_layernorm")
        gate, up = weight(f"{p}.mlp.gate_proj"), weight(f"{p}.mlp.up_proj")
        ffn = gate.shape[1]
        if named(f"{p}.mlp.gate_proj.bias") is not None or named(f"{p}.mlp.down_proj.bias") is not None:
            raise FusionUnsupported(f"{p}: MLP biases are not rebuilt")
        gate_up = linear(normed, f"{p}.mlp.gate_up_proj", np.concatenate([gate, up], axis=1), None,
                         f"{p}.gate_up")
        g, u = node("Split", [gate_up, i64(f"{p}.gate_up_split", [ffn, ffn])], [f"{p}.gate", f"{p}.up"], axis=-1)
        sig = node("Sigmoid", [g], [f"{p}.gate_sigmoid"])[0]
        silu = node("Mul", [g, sig], [f"{p}.gate_silu"])[0]
        act = node("Mul", [silu, u], [f"{p}.act"])[0]
        hidden = linear(act, f"{p}.mlp.down_proj", weight(f"{p}.mlp.down_proj"), None, f"{p}.mlp_out")

    final, _ = norm(hidden, required("model.norm.weight"), "model.norm")
    if tied_head is not None:
        if not np.array_equal(array(tied_head), embed):
            raise FusionUnsupported("the tied LM head is not the embedding table")
        head_t = node("Transpose", [embed_name], ["lm_head.weight_t"], perm=[1, 0])[0]
        node("MatMul", [final, head_t], ["logits"], module="lm_head")
    else:
        linear(final, "lm_head", weight("lm_head"), named("lm_head.bias"), "logits")
    if weights:
        raise FusionUnsupported(f"MatMul weights the fused graph does not use: {sorted(weights)[:4]}")

    opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 18)
    fused_graph = helper.make_graph(nodes, graph.name or "decoder", list(graph.input), list(graph.output),
                                    initializer=new_inits)
    proto = helper.make_model(fused_graph, opset_imports=[helper.make_opsetid("", opset),
                                                          helper.make_opsetid(_MS, 1)],
                              producer_name="edgeagent", ir_version=source.ir_version)
    for prop in source.metadata_props:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    return FusedGraph(proto, len(nodes), len(graph.node), ops)


def _probe_feeds(metadata: Mapping[str, Any], rng: np.random.Generator):
    """Three steps of a batch of two, the second row left-padded: a prefill, one token, three tokens."""
    vocab = int(metadata["vocab_size"])
    lengths = (7, 4)
    prefill = rng.integers(3, vocab, size=(2, max(lengths)), dtype=np.int64)
    valid = np.zeros(prefill.shape, bool)
    for row, n in enumerate(lengths):
        valid[row, prefill.shape[1] - n:] = True
    steps = [(prefill, valid)]
    for k in (1, 3):
        steps.append((rng.integers(3, vocab, size=(2, k), dtype=np.int64), np.ones((2, k), bool)))
    return steps


def _probe_run(session, metadata: Mapping[str, Any], steps, *, shared: bool) -> list[tuple[np.ndarray, list]]:
    """Each probe step's logits and caches (the first T positions), from SESSION's own cache.

    shared: bind each layer's past and present to one buffer of the probe's total length, as
    `OrtSharedKVCache` does (GroupQueryAttention's past_present_share_buffer).
    """
    import onnxruntime as ort

    from edgeagent.generate.decoder import step_inputs

    heads, head_dim, layers = (int(metadata[k]) for k in ("num_kv_heads", "head_dim", "num_layers"))
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [n.replace("past_key_values", "present") for n in past]
    batch = steps[0][0].shape[0]
    capacity = sum(tokens.shape[1] for tokens, _ in steps) if shared else 0
    arrays = [np.zeros((batch, heads, capacity, head_dim), np.float32) for _ in past]
    binding = session.io_binding()
    for name, out, array in zip(past, present, arrays):
        value = ort.OrtValue.ortvalue_from_numpy(array)
        binding.bind_ortvalue_input(name, value)
        if shared:
            binding.bind_ortvalue_output(out, value)
    mask, position = np.zeros((batch, 0), np.int64), np.zeros(batch, np.int64)
    results = []
    for tokens, valid in steps:
        ids, mask, positions, advance = step_inputs(mask, position, tokens, valid)
        position = position + advance
        for name, value in (("input_ids", ids), ("attention_mask", mask), ("position_ids", positions)):
            binding.bind_cpu_input(name, value)
        binding.bind_output("logits", "cpu")
        if not shared:
            for out in present:
                binding.bind_output(out, "cpu")
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()  # in the order names were first bound
        total = mask.shape[1]
        if shared:
            logits, caches = outputs[-1].numpy(), [a[:, :, :total].copy() for a in arrays]
        else:
            logits, caches = outputs[0].numpy(), [v.numpy() for v in outputs[1:]]
            for name, value in zip(past, outputs[1:]):
                binding.bind_ortvalue_input(name, value)
        results.append((logits, caches))
    return results


def check_fused_parity(reference, fused, metadata: Mapping[str, Any], *, shared: bool = False,
                       atol: float = _PROBE_ATOL, seed: int = 0) -> dict[str, Any]:
    """Run REFERENCE (the IR) and FUSED (onnxruntime InferenceSessions) on the same probe steps.

    Each step's logits at real (unpadded) positions and each step's cache at unmasked positions
    are compared; the cache fed forward is each model's own. shared: FUSED keeps its cache in one
    buffer per layer (past and present bound together). Returns max abs differences and argmax
    agreement, with `ok` true when every difference is within ATOL scaled by the logits' magnitude.
    """
    steps = _probe_feeds(metadata, np.random.default_rng(seed))
    want = _probe_run(reference, metadata, steps, shared=False)
    got = _probe_run(fused, metadata, steps, shared=shared)
    worst_logits = worst_cache = 0.0
    scale = 1.0
    agree = total = 0
    valid_so_far = np.zeros((steps[0][0].shape[0], 0), bool)
    for (tokens, valid), (ref_logits, ref_cache), (logits, cache) in zip(steps, want, got):
        real = np.ones(tokens.shape, bool) if valid is None else valid.astype(bool)
        valid_so_far = np.concatenate([valid_so_far, real], axis=1)
        scale = max(scale, float(np.abs(ref_logits[real]).max()))
        worst_logits = max(worst_logits, float(np.abs(ref_logits[real] - logits[real]).max()))
        keep = valid_so_far[:, None, :, None]
        for a, b in zip(ref_cache, cache):
            worst_cache = max(worst_cache, float(np.abs(np.where(keep, a - b, 0)).max()))
        agree += int((ref_logits[real].argmax(-1) == logits[real].argmax(-1)).sum())
        total += int(real.sum())
    ok = worst_logits <= atol * scale and worst_cache <= atol * scale
    return {"ok": bool(ok), "logits_max_abs_diff": worst_logits, "cache_max_abs_diff": worst_cache,
            "logits_scale": scale, "argmax_agreement": agree / max(total, 1), "positions": total,
            "atol": atol, "kv_buffer": "shared" if shared else "separate"}
