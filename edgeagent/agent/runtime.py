"""Text → ToolCall with no torch or transformers: `tokenizers`, any backend's Session, numpy.

The Decoder tokenizes (truncating to the model's length and saying so), runs the session, and
turns BIO tags back into slot values: numbers become ints, words from Home Assistant's closed
lists (colours, brightness levels, states) become the list's value, names stay as said.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..workloads import ha_intents

NOT_UNDERSTOOD = "not_understood"


@dataclass
class ToolCall:
    """What the agent understood: an intent with its slots, or `not_understood`."""

    intent: str
    slots: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    latency_ms: float = 0.0
    text: str = ""
    truncated: bool = False

    @property
    def understood(self) -> bool:
        return self.intent != NOT_UNDERSTOOD

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "intent": self.intent, "slots": self.slots, "confidence": self.confidence,
                "latency_ms": self.latency_ms, "truncated": self.truncated}


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Decoder:
    """Tokenizer + label names + slot-value normalisation for one model family."""

    def __init__(self, tokenizer, intents, tags, *, max_length: int = 64, threshold: float = 0.5,
                 value_table: dict[str, dict[str, Any]] | None = None) -> None:
        self.tokenizer, self.intents, self.tags = tokenizer, list(intents), list(tags)
        self.max_length, self.threshold = max_length, threshold
        self.value_table = value_table or {}
        self.scheme = ha_intents.tag_scheme(self.tags)
        tokenizer.no_truncation()  # truncation is done here, so that it can be reported

    @classmethod
    def for_workload(cls, tokenizer, language: str = "en", **kwargs) -> Decoder:
        intents, tags = ha_intents.label_space(language)
        return cls(tokenizer, intents, tags, value_table=closed_list_values(language), **kwargs)

    def encode(self, text: str):
        encoding = self.tokenizer.encode(text)
        ids = encoding.ids
        truncated = len(ids) > self.max_length
        if truncated:  # keep the closing special token
            ids = ids[:self.max_length - 1] + ids[-1:]
        return np.asarray([ids], np.int64), encoding, truncated

    def act(self, session, text: str) -> ToolCall:
        start = time.perf_counter()
        if not isinstance(text, str) or not text.strip():
            return ToolCall(NOT_UNDERSTOOD, text=text if isinstance(text, str) else "",
                            latency_ms=(time.perf_counter() - start) * 1e3)
        ids, encoding, truncated = self.encode(text)
        outputs = session.run(self._feeds(session, ids, np.ones_like(ids)))
        call = self.decode(outputs["intent_logits"][0], outputs["slot_logits"][0], encoding, text)
        call.truncated = truncated
        call.latency_ms = (time.perf_counter() - start) * 1e3
        return call

    def act_batch(self, session, texts: list[str]) -> list[ToolCall]:
        """act() for many utterances in one model call, padded to the longest.

        Gives the same calls as act() one by one (padding is masked); each call's latency_ms is
        the whole batch's time, which is what each caller waited for. Empty or non-string items
        are not understood and do not reach the model.
        """
        start = time.perf_counter()
        calls: list[ToolCall | None] = [None] * len(texts)
        live = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        for i in set(range(len(texts))) - set(live):
            calls[i] = ToolCall(NOT_UNDERSTOOD, text=texts[i] if isinstance(texts[i], str) else "")
        if live:
            encoded = [self.encode(texts[i]) for i in live]
            width = max(ids.shape[1] for ids, _, _ in encoded)
            ids = np.zeros((len(live), width), np.int64)  # 0 is [PAD] in BERT vocabularies
            mask = np.zeros_like(ids)
            for row, (item_ids, _, _) in enumerate(encoded):
                ids[row, :item_ids.shape[1]] = item_ids[0]
                mask[row, :item_ids.shape[1]] = 1
            outputs = session.run(self._feeds(session, ids, mask))
            for row, (i, (item_ids, encoding, truncated)) in enumerate(zip(live, encoded)):
                length = item_ids.shape[1]
                call = self.decode(outputs["intent_logits"][row], outputs["slot_logits"][row, :length],
                                   encoding, texts[i])
                call.truncated = truncated
                calls[i] = call
        elapsed = (time.perf_counter() - start) * 1e3
        for call in calls:
            call.latency_ms = elapsed
        return calls

    @staticmethod
    def _feeds(session, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if any(s.name == "token_type_ids" for s in session.inputs):
            feeds["token_type_ids"] = np.zeros_like(ids)
        return feeds

    def decode(self, intent_logits: np.ndarray, slot_logits: np.ndarray, encoding, text: str) -> ToolCall:
        # The winner's softmax probability, without normalising the other 41: 1 / sum(exp(x - max)).
        best = int(intent_logits.argmax())
        confidence = 1.0 / float(np.exp(intent_logits.astype(np.float64) - float(intent_logits[best])).sum())
        if confidence < self.threshold:
            return ToolCall(NOT_UNDERSTOOD, confidence=confidence, text=text)
        tag_ids = slot_logits.argmax(-1).tolist()
        slots: dict[str, Any] = {}
        if any(tag_ids):  # most commands' tokens are not all O, but questions often are
            words = encoding.word_ids
            if len(words) > len(tag_ids):  # truncated: the model's last token is the closing one
                words = words[:len(tag_ids) - 1] + [None]
            # Special tokens (no word) never carry a slot.
            tag_ids = [t if w is not None else self.scheme.outside for t, w in zip(tag_ids, words)]
            tag_ids = ha_intents.word_level(tag_ids, words, self.scheme)
            offsets = encoding.offsets
            for start, end, slot in sorted(ha_intents.tag_spans(tag_ids, self.scheme)):
                surface = text[offsets[start][0]:offsets[end - 1][1]]
                slots.setdefault(slot, self.normalise(slot, surface))
        return ToolCall(self.intents[best], slots, confidence, text=text)

    def normalise(self, slot: str, surface: str) -> Any:
        words = surface.strip().lower()
        table = self.value_table.get(slot)
        if table and words in table:
            return table[words]
        if words.isdigit():
            return int(words)
        if _NUMBER.fullmatch(words):
            return float(words) if ("." in words or "e" in words) else int(words)
        return surface.strip()


def closed_list_values(language: str = "en") -> dict[str, dict[str, Any]]:
    """slot → {spoken text → value} for Home Assistant's closed lists (colours, states, levels)."""
    from hassil.intents import TextSlotList
    from hassil.sample import sample_expression

    intents = ha_intents.load_templates(language)
    slot_for_list = ha_intents.slots_by_list(language)
    table: dict[str, dict[str, Any]] = {}
    for list_name, slot_list in intents.slot_lists.items():
        if not isinstance(slot_list, TextSlotList):
            continue
        for value in slot_list.values:
            out = value.value_out
            for spoken in sample_expression(value.text_in, intents.slot_lists, intents.expansion_rules):
                for slot in slot_for_list.get(list_name, ()):
                    table.setdefault(slot, {}).setdefault(spoken.strip().lower(), out if out is not None else spoken)
    return table


LABELS_FILE = "labels.json"
TOKENIZER_FILE = "tokenizer.json"


class EdgeAgent:
    """Utterance → ToolCall → tool, on any backend, with no torch at run time.

    An agent folder holds `tokenizer.json`, `labels.json` and one artifact folder per backend
    and precision (as `edgeagent demo` writes them). Tools register per intent:

        agent = EdgeAgent.load("~/.cache/edgeagent/agent")
        @agent.tool("HassTurnOn")
        def turn_on(call): ...
        agent.handle("turn on the kitchen light")
    """

    def __init__(self, session, decoder: Decoder, *, artifact=None) -> None:
        self.session, self.decoder, self.artifact = session, decoder, artifact
        self.tools: dict[str, Any] = {}

    @classmethod
    def load(cls, artifacts, *, backend: str | None = None, precision: str | None = None,
             threshold: float = 0.5, options: Any = None) -> EdgeAgent:
        """Open the best matching artifact in an agent folder.

        Args:
            artifacts: the agent folder.
            backend, precision: which artifact (default: int8 on onnxruntime if present, else the
                first usable one in the folder).
            threshold: intent confidence below which the answer is `not_understood`.
            options: the backend's load options, e.g. {"threads": "auto"} for onnxruntime.

        Raises:
            InputError: no such folder, no artifact matching the request (the present ones are listed).
        """
        import json
        from pathlib import Path

        from ..artifact import open_artifact
        from ..backend import backend_entries
        from ..errors import InputError
        from ..pipeline import load_session

        folder = Path(artifacts).expanduser()
        if not (folder / LABELS_FILE).is_file() or not (folder / TOKENIZER_FILE).is_file():
            raise InputError(f"{folder} is not an agent folder (it needs {LABELS_FILE}, {TOKENIZER_FILE} and "
                             "artifacts); build one with `edgeagent demo`", field="artifacts")
        if backend is not None and backend not in backend_entries():
            raise InputError(f"unknown backend {backend!r}; registered backends: {sorted(backend_entries())}",
                             field="backend")
        found = []
        for path in sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()):
            artifact = open_artifact(path)
            found.append(artifact)
        usable = [a for a in found if (backend is None or a.backend == backend)
                  and (precision is None or a.precision == precision)]
        entries = backend_entries()
        usable = [a for a in usable if entries.get(a.backend) and entries[a.backend].backend
                  and entries[a.backend].backend.available()]
        if not usable:
            present = [f"{a.backend}/{a.precision}" for a in found]
            raise InputError(f"no usable artifact for backend={backend or 'any'}, precision={precision or 'any'} "
                             f"in {folder}; present: {present}", field="backend")
        preferred = sorted(usable, key=lambda a: (a.backend != "onnxruntime", a.precision != "int8"))
        artifact = preferred[0]
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
        tokenizer = ha_intents.load_tokenizer(folder / TOKENIZER_FILE)
        decoder = Decoder(tokenizer, labels["intents"], labels["tags"], threshold=threshold,
                          value_table=closed_list_values(labels.get("language", "en")))
        return cls(load_session(artifact, options=options), decoder, artifact=artifact)

    def act(self, text: str) -> ToolCall:
        """Understand one utterance; never raises for bad text (empty text is not understood)."""
        return self.decoder.act(self.session, text)

    @property
    def batch_invariant(self) -> bool:
        """Whether an utterance's answer is the same alone and in a batch.

        Not so for dynamic INT8, which scales activations per call from the whole batch tensor:
        a batched answer would depend on its neighbours.
        """
        return self.artifact is None or self.artifact.recipe.get("name") != "dynamic"

    def act_batch(self, texts: list[str]) -> list[ToolCall]:
        """act() for many utterances: one padded model call where that gives the same answers
        as one by one (see `batch_invariant`), else one call each."""
        texts = list(texts)
        if self.batch_invariant:
            return self.decoder.act_batch(self.session, texts)
        return [self.act(text) for text in texts]

    def tool(self, intent: str):
        """Decorator: register `fn(call) -> result` as the handler of `intent`."""
        def register(fn):
            self.tools[intent] = fn
            return fn
        return register

    def handle(self, text: str) -> tuple[ToolCall, Any]:
        """act(), then run the intent's tool; (call, None) when nothing handles it."""
        call = self.act(text)
        handler = self.tools.get(call.intent) if call.understood else None
        return call, (handler(call) if handler else None)

    def close(self) -> None:
        self.session.close()
