"""A decoder Session with its assets, and the adapter that owns the KV cache between steps.

The generation loop talks to a model only through `Session.run(feeds)`, so every backend shares
it. `KVCache` builds the feeds of one step from the contract's inputs (`input_ids`,
`attention_mask`, `position_ids`, `past_key_values.{i}.key|value`) and keeps the `present.*`
outputs as the next step's past: the arrays a backend returns are passed straight back, never
copied on this side.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..artifact import MANIFEST, Artifact
from ..backend import Session
from ..errors import ArtifactError, InputError, UnsupportedModel
from .assets import TOKENIZER_FILE, DecoderAssets

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
REQUIRED_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclass(frozen=True)
class DecoderLayout:
    """What the KV cache looks like, read from the Session's signature.

    Attributes:
        num_layers: decoder layers (pairs of past key/value inputs).
        num_kv_heads: key/value heads (axis 1 of each past tensor).
        head_dim: size of one head (axis 3).
        kv_dtype: numpy dtype of the cache (float32 in the contract; float16 for fp16 builds).
        vocab_size: logits' last axis, or None when the signature leaves it symbolic.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    kv_dtype: np.dtype
    vocab_size: int | None

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"decoder layout {name} must be at least 1, got {getattr(self, name)}",
                                 field=name)

    @classmethod
    def from_signature(cls, session: Session, metadata: Mapping[str, Any]) -> DecoderLayout:
        """Read the layout from the inputs and outputs; fixed dims win over metadata.

        Raises:
            UnsupportedModel: the signature is not the decoder contract's.
        """
        names = {s.name: s for s in session.inputs}
        outputs = {s.name: s for s in session.outputs}
        missing = [n for n in REQUIRED_INPUTS if n not in names]
        layers = sorted({int(m.group(1)) for n in names if (m := _PAST.match(n))})
        if missing or not layers or "logits" not in outputs:
            raise UnsupportedModel(
                f"this Session is not a decoder with an explicit KV cache (missing inputs "
                f"{missing or 'none'}, {len(layers)} past_key_values layers, logits output "
                f"{'present' if 'logits' in outputs else 'missing'}); its inputs are {sorted(names)}. "
                "Export the model with `edgeagent export SOURCE --task text-generation`")
        if layers != list(range(len(layers))):
            raise UnsupportedModel(f"past_key_values layers are not numbered 0..n-1: {layers}")
        for i in layers:
            for kind in ("key", "value"):
                if f"past_key_values.{i}.{kind}" not in names or f"present.{i}.{kind}" not in outputs:
                    raise UnsupportedModel(f"layer {i} lacks past_key_values.{i}.{kind} or "
                                           f"present.{i}.{kind}; the decoder contract needs both")
        spec = names["past_key_values.0.key"]
        if spec.rank != 4:
            raise UnsupportedModel(f"past_key_values.0.key has rank {spec.rank}; the contract's is "
                                   "[batch, num_kv_heads, past_sequence, head_dim]")

        def dim(axis: int, key: str) -> int:
            value = spec.shape[axis]
            if isinstance(value, int):
                return value
            if str(metadata.get(key, "")).isdigit():
                return int(metadata[key])
            raise UnsupportedModel(f"past_key_values.0.key leaves axis {axis} symbolic and ir.json has "
                                   f"no {key}; export the model again")

        vocab = outputs["logits"].shape[-1] if outputs["logits"].rank == 3 else None
        return cls(num_layers=len(layers), num_kv_heads=dim(1, "num_kv_heads"),
                   head_dim=dim(3, "head_dim"), kv_dtype=np.dtype(spec.dtype),
                   vocab_size=vocab if isinstance(vocab, int) else None)


class DecoderCache(Protocol):
    """What the loop needs of a batch's cache between model steps (`KVCache` is the default).

    A backend that keeps the cache itself — OpenVINO's stateful model (state variables and a
    `beam_idx` input), ONNX Runtime with IO binding (present OrtValues bound back as the next
    past, on the GPU never copied to the host) — gives its Session a `decoder_cache(batch)`
    method that returns one of these, and the same loop drives it.
    """

    steps: int

    def step(self, tokens: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Feed `[batch, k]` tokens (False in `valid` marks padding); return `[batch, k, vocab]` logits."""

    def select(self, rows: Sequence[int] | np.ndarray) -> None:
        """Keep, reorder or repeat the batch's rows (beams, finished rows leaving)."""


class Decoder:
    """A decoder Session plus its tokenizer and configs: what `generate` runs.

    Build one with `load_decoder`, or directly from a Session of any backend and the IR folder
    holding its tokenizer. Closing it closes the Session.

    Raises:
        UnsupportedModel: the Session neither has the contract's explicit KV inputs and outputs
            nor provides its own cache (`decoder_cache`).
    """

    def __init__(self, session: Session, assets: DecoderAssets) -> None:
        self.session = session
        self.assets = assets
        self._own_cache = getattr(session, "decoder_cache", None)
        # A session that keeps its cache itself need not show past/present tensors.
        self.layout = (None if self._own_cache is not None and not any(
            _PAST.match(s.name) for s in session.inputs)
            else DecoderLayout.from_signature(session, assets.metadata))
        self._ll_tokenizer: Any = None

    @property
    def max_length(self) -> int | None:
        return self.assets.max_length

    def ll_tokenizer(self) -> Any:
        """llguidance's tokenizer for this vocabulary, built once (0.3 s at 49k tokens here)."""
        if self._ll_tokenizer is None:
            from .grammar import ll_tokenizer

            self._ll_tokenizer = ll_tokenizer(self.assets, self.vocab_size())
        return self._ll_tokenizer

    def vocab_size(self) -> int:
        """The logits' width: the signature's, else ir.json's, else the tokenizer's."""
        if self.layout is not None and self.layout.vocab_size is not None:
            return self.layout.vocab_size
        meta = self.assets.metadata.get("vocab_size")
        if isinstance(meta, int) or str(meta).isdigit():
            return int(meta)
        return self.assets.tokenizer.get_vocab_size(with_added_tokens=True)

    def new_cache(self, batch: int) -> DecoderCache:
        """An empty cache for `batch` rows: the session's own, else a `KVCache`."""
        if self._own_cache is not None:
            return self._own_cache(batch)
        return KVCache(self, batch)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KVCache:
    """The state of one batch between model steps: past keys/values, attention mask, positions.

    Each `step` feeds `[batch, k]` tokens (k = 1 for a plain decode step, more for a prefill or
    for fast-forwarded grammar tokens) with a validity mask: invalid entries are padding, get
    attention_mask 0 and are never attended to, so rows of a batch can advance by different
    numbers of tokens in one call. Positions follow the contract: the count of valid tokens
    before each one (cumsum(mask) - 1, clipped at 0).
    """

    def __init__(self, decoder: Decoder | None, batch: int, *, session: Session | None = None,
                 layout: DecoderLayout | None = None) -> None:
        layout = decoder.layout if decoder is not None else layout
        self._session = decoder.session if decoder is not None else session
        empty = np.zeros((batch, layout.num_kv_heads, 0, layout.head_dim), layout.kv_dtype)
        self._past_names = [f"past_key_values.{i}.{kind}" for i in range(layout.num_layers)
                            for kind in ("key", "value")]
        self._present_names = [f"present.{i}.{kind}" for i in range(layout.num_layers)
                               for kind in ("key", "value")]
        # One empty array serves every layer: backends read the past, they never write it.
        self.past: list[np.ndarray] = [empty] * len(self._past_names)
        self.attention_mask = np.zeros((batch, 0), np.int64)
        self.next_position = np.zeros(batch, np.int64)
        self.steps = 0

    @property
    def batch(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        """Positions held per row, padding included (the past_sequence of the next step)."""
        return int(self.attention_mask.shape[1])

    def step(self, tokens: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Run the model on `tokens` and keep the new cache.

        Args:
            tokens: int64 `[batch, k]`.
            valid: bool `[batch, k]`, False at padding (default: all valid).

        Returns:
            logits `[batch, k, vocab]` as the backend returned them.
        """
        tokens, mask, positions, advance = step_inputs(self.attention_mask, self.next_position,
                                                       tokens, valid)
        # The cache is the backend's present.* arrays fed back as they came: ONNX Runtime on
        # the CPU hands out numpy views of its own buffers and reads contiguous numpy inputs in
        # place, so this side copies nothing. The copy left is inside the model: standard
        # ONNX's Concat writes the whole past into a new present each step. A backend that
        # keeps the cache itself (OpenVINO's stateful model) or on its device (IO binding on
        # a GPU, where `run` would copy it to the host and back each step) gives its Session a
        # `decoder_cache` (see DecoderCache).
        feeds = {"input_ids": tokens, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(self._past_names, self.past))
        out = self._session.run(feeds)
        self.past = [out[name] for name in self._present_names]
        self.attention_mask = mask
        self.next_position = self.next_position + advance
        self.steps += 1
        return out["logits"]

    def select(self, rows: Sequence[int] | np.ndarray) -> None:
        """Keep (and reorder, or repeat) these rows: beam reordering, dropping finished rows."""
        rows = np.asarray(rows, np.int64)
        if rows.shape == (self.batch,) and np.array_equal(rows, np.arange(self.batch)):
            return  # the common beam step that keeps every beam in place copies nothing
        self.past = [p[rows] for p in self.past]
        self.attention_mask = self.attention_mask[rows]
        self.next_position = self.next_position[rows]


def probe(session: Session, metadata: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Run a decoder Session as generation would, without its tokenizer: a three-token prefill,
    then one decode step on the cache it left. How a freshly compiled decoder artifact is proven
    to load and answer finite logits before it is kept (`pipeline.verify_artifact`).

    Returns:
        {"prefill_logits": [1, 3, vocab], "decode_logits": [1, 1, vocab]}.

    Raises:
        UnsupportedModel: the Session is not a decoder of the contract.
    """
    own = getattr(session, "decoder_cache", None)
    if own is not None:
        cache: Any = own(1)
    else:
        cache = KVCache(None, 1, session=session, layout=DecoderLayout.from_signature(session, metadata or {}))
    # Ids 1..4 exist in every vocabulary a decoder has; which tokens they are does not matter here.
    prefill = np.asarray(cache.step(np.array([[1, 2, 3]], np.int64)))
    decode = np.asarray(cache.step(np.array([[4]], np.int64)))
    return {"prefill_logits": prefill, "decode_logits": decode}


def step_inputs(attention_mask: np.ndarray, next_position: np.ndarray, tokens: np.ndarray,
                valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The contract's `input_ids`, `attention_mask` and `position_ids` of one step.

    Args:
        attention_mask: int64 `[batch, past]`, the mask so far.
        next_position: int64 `[batch]`, each row's count of valid tokens so far.
        tokens: `[batch, k]` token ids.
        valid: bool `[batch, k]`, False at padding (None: all valid).

    Returns:
        (input_ids, the mask grown by k columns, position_ids, valid tokens per row). A
        position is the count of valid tokens before it (cumsum(mask) - 1, clipped at 0), as
        the contract's left padding prescribes. The mask is a new array, a small copy beside
        the cache.
    """
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    step_mask = (np.ones(tokens.shape, np.int64) if valid is None
                 else np.asarray(valid, bool).astype(np.int64))
    positions = next_position[:, None] + np.cumsum(step_mask, axis=1) - 1
    np.maximum(positions, 0, out=positions)
    mask = np.concatenate([attention_mask, step_mask], axis=1)
    return tokens, mask, positions, step_mask.sum(axis=1)


def _is_artifact(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def load_decoder(source: Decoder | Session | Artifact | str | os.PathLike, *,
                 assets: DecoderAssets | str | os.PathLike | None = None, options: Any = None,
                 target: Any = None) -> Decoder:
    """Open a decoder for `generate`.

    Args:
        source: a Decoder (returned as is), a Session of any backend (then `assets` is
            required), an Artifact or artifact folder (opened with the backend that built it),
            or a decoder IR folder or its `.onnx` file (opened with ONNX Runtime on the CPU).
        assets: the folder holding tokenizer.json and the configs, or DecoderAssets (default:
            the artifact or IR folder itself).
        options: backend runtime options (e.g. {"threads": 2}), for artifacts and IR folders.
        target: a Target supplying thread settings.

    Raises:
        InputError: a Session without `assets`, or a source of another type.
        ArtifactError: no tokenizer.json where the assets should be; a modified artifact.
        ModelRejected: the IR's ONNX file fails the safety checks.
        UnsupportedModel: the model is not a decoder with the contract's inputs and outputs.
    """
    if isinstance(source, Decoder):
        return source
    if isinstance(assets, (str, os.PathLike)):
        assets = DecoderAssets.from_folder(assets)
    if isinstance(source, Session):
        if assets is None:
            raise InputError("a Session carries no tokenizer: pass assets=<the decoder IR folder> "
                             "(the folder holding tokenizer.json)", field="assets")
        return Decoder(source, assets)
    if isinstance(source, Artifact):
        folder = source.path
    elif isinstance(source, (str, os.PathLike)):
        folder = Path(source)
    else:
        raise InputError(f"generate takes a Decoder, Session, Artifact or folder, got "
                         f"{type(source).__name__}", field="model")
    if folder.is_file():  # model.onnx given: its IR folder
        if assets is None:
            assets = DecoderAssets.from_folder(folder.parent)
        return Decoder(_ir_session(folder, options, target), assets)
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is neither an artifact nor a decoder IR folder; export one "
                            "with `edgeagent export SOURCE --task text-generation`")
    if assets is None:
        if not (folder / TOKENIZER_FILE).is_file():
            raise ArtifactError(f"{folder} holds no {TOKENIZER_FILE}: pass assets=<the decoder IR "
                                "folder it was compiled from>")
        assets = DecoderAssets.from_folder(folder)
    if _is_artifact(folder):
        from ..artifact import open_artifact
        from ..backend import get_backend

        # What pipeline.load_session does (pipeline itself imports this module to verify decoders).
        verified = open_artifact(source.path if isinstance(source, Artifact) else folder)
        session = get_backend(verified.backend).load(verified, options=options, target=target)
        try:
            return Decoder(session, assets)
        except Exception:
            session.close()
            raise
    return Decoder(_ir_session(folder, options, target), assets)


def _ir_session(path: Path, options: Any, target: Any) -> Session:
    """ONNX Runtime on an uncompiled IR: the IR is standard ONNX, and ONNX Runtime runs it as is."""
    from ..backend import get_backend
    from ..ir import load

    ir = load(path)  # the safety checks every model passes before a runtime parses it
    return get_backend("onnxruntime").open_model(ir, options=options, target=target)
