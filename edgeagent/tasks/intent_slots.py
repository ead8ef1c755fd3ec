"""Task `intent-slots`: a joint intent classifier and BIO slot tagger over word pieces.

Models take `input_ids` and `attention_mask` `[batch, sequence]` and return `intent_logits
[batch, intents]` and `slot_logits [batch, sequence, tags]`. The reader tokenizes (truncating to
the model's length and saying so), runs any backend's Session and turns tags back into slot
values read per word: numbers become ints, words of a closed list (colours, levels, states)
become the list's value through the task's value table, names stay as said.

Evaluation labels are one array `[N, 1 + sequence]`: the intent id, then the tag ids
(IGNORE on special and padding tokens).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from ..ir import TensorSpec
from .base import (IGNORE, NOT_UNDERSTOOD, ExportSpec, Head, ToolCall, check_head_widths, fill_context, require_fraction,
                   require_labels, softmax_confidence)
from .text import TextGate, clean_text, highest_id

NAME = "intent-slots"
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("intent_logits", "slot_logits")
DEFAULT_MAX_LENGTH = 64
MAX_LENGTH = 8192

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_PERCENT = re.compile(r"\s*(%|per ?cent)$")
SPOKEN_NUMBER_LIMIT = 1000


@functools.cache
def spoken_numbers(language: str) -> dict[str, int]:
    """Spoken cardinals 0..1000 → their value ("forty five", "forty-five", "one hundred and five"),
    from unicode-rbnf's spell-out rules, the library Home Assistant's hassil uses to speak numbers in
    its range lists. Empty where unicode-rbnf (the `agent` extra) is missing or has no such language:
    number words then stay words, as before."""
    try:
        from unicode_rbnf import RbnfEngine

        engine = RbnfEngine.for_language(language)
    except Exception:  # not installed, or no rules for the language
        return {}
    table: dict[str, int] = {}
    for value in range(SPOKEN_NUMBER_LIMIT + 1):
        text = engine.format_number(value).text.lower()
        forms = {text, text.replace("-", " ")}
        # English also says "and" after hundreds ("one hundred and five") and "a hundred".
        forms |= {f.replace("hundred ", "hundred and ", 1) for f in forms if "hundred " in f}
        forms |= {"a " + f[4:] for f in forms if f.startswith("one hundred") or f.startswith("one thousand")}
        for form in forms:
            table.setdefault(form, value)
    return table


def parse_number(words: str, language: str | None) -> int | float | None:
    """A slot's surface as a number: digits ("30", "18.5") or, with unicode-rbnf, spoken words
    ("thirty", "eighteen point five"), with a trailing "percent" or "%" allowed; None otherwise."""
    words = _PERCENT.sub("", words.strip().lower()).strip()
    if words.isdigit():
        return int(words)
    if _NUMBER.fullmatch(words):
        return float(words) if ("." in words or "e" in words) else int(words)
    spoken = spoken_numbers(language) if language else {}
    if not spoken:
        return None
    whole, point, fraction = words.partition(" point ")
    if whole not in spoken:
        return None
    if not point:
        return spoken[whole]
    digits = [spoken.get(d) for d in fraction.split()]
    if not digits or any(d is None or d > 9 for d in digits):
        return None
    return float(f"{spoken[whole]}." + "".join(str(d) for d in digits))


# --------------------------------------------------------------------------------------------
# BIO tags

class TagScheme:
    """BIO tag names parsed once, so per-sentence decoding indexes lists instead of splitting strings.

    `prefix[i]` is "B", "I" or "O" and `slot[i]` the slot name (None for O) of tag id i;
    `inside[slot]` is the id of I-slot. Functions taking `tag_names` accept a scheme as well.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        parts = [name.partition("-") for name in self.names]
        self.prefix = [prefix if dash else "O" for prefix, dash, _ in parts]
        self.slot = [slot if dash else None for _, dash, slot in parts]
        self.inside = {slot: self.index[f"I-{slot}"] for slot in self.slot
                       if slot is not None and f"I-{slot}" in self.index}
        self.outside = self.index.get("O", 0)

    def __len__(self) -> int:
        return len(self.names)


@functools.lru_cache(maxsize=8)
def _scheme_of(names: tuple[str, ...]) -> TagScheme:
    return TagScheme(names)


def tag_scheme(tag_names: Sequence[str] | TagScheme) -> TagScheme:
    return tag_names if isinstance(tag_names, TagScheme) else _scheme_of(tuple(tag_names))


def tag_spans(tags: Sequence[int], tag_names: Sequence[str] | TagScheme) -> set[tuple[int, int, str]]:
    """Entity spans (start, end, slot) from BIO tag ids; an I- without its B- starts a span."""
    scheme = tag_scheme(tag_names)
    prefixes, slots, count = scheme.prefix, scheme.slot, len(scheme)
    spans, start, slot = set(), None, None
    for position, tag_id in enumerate([*tags, IGNORE]):
        prefix, kind = (prefixes[tag_id], slots[tag_id]) if 0 <= tag_id < count else ("O", None)
        if start is not None and (prefix != "I" or kind != slot):
            spans.add((start, position, slot))
            start = slot = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, slot = position, kind
    return spans


def word_level(tags: Sequence[int], words: Sequence[int | None],
               tag_names: Sequence[str] | TagScheme) -> list[int]:
    """Give every word-piece of a word one tag: the word's first non-O piece decides its slot and
    whether it begins a span (B-) or continues one (I-); the rest of the word continues it.

    Slots are words, not word-pieces: a tagger that marks only "##bar" of "sound ##bar" still
    found the word "soundbar". Special tokens (word None or -1) keep their tags.
    """
    scheme = tag_scheme(tag_names)
    slots, inside, count = scheme.slot, scheme.inside, len(scheme)
    out = list(tags)
    i, n = 0, min(len(out), len(words))
    while i < n:
        word = words[i]
        if word is None or word < 0:
            i += 1
            continue
        j = i + 1
        while j < n and words[j] == word:
            j += 1
        if j == i + 1:  # a one-piece word (most of them) keeps its tag, or O if it is not one
            if not (0 <= out[i] < count and slots[out[i]] is not None):
                out[i] = scheme.outside
            i = j
            continue
        chosen = next((out[k] for k in range(i, j) if 0 <= out[k] < count and slots[out[k]] is not None), None)
        if chosen is None:
            out[i:j] = [scheme.outside] * (j - i)
        else:  # the piece that decides keeps its B- or I-, the rest of the word continues its slot
            out[i] = chosen
            out[i + 1:j] = [inside[slots[chosen]]] * (j - i - 1)
        i = j
    return out


def bio_labels(encoding, spans, tag_index: Mapping[str, int]) -> list[int]:
    """BIO tag ids per token of a `tokenizers` encoding from character spans (start, end, slot, ...);
    special tokens get IGNORE."""
    labels = []
    for token_index, (start, end) in enumerate(encoding.offsets):
        if encoding.special_tokens_mask[token_index]:
            labels.append(IGNORE)
            continue
        tag = "O"
        for span_start, span_end, slot, *_ in spans:
            if start >= span_start and end <= span_end and end > start:
                first = not any(encoding.offsets[j][0] >= span_start and encoding.offsets[j][1] <= span_end
                                and not encoding.special_tokens_mask[j] for j in range(token_index))
                tag = f"{'B' if first else 'I'}-{slot}"
                break
        labels.append(tag_index.get(tag, 0))
    return labels


def joint_metrics(intent_logits: np.ndarray, slot_logits: np.ndarray, intent_labels: np.ndarray,
                  tag_labels: np.ndarray, tag_names: Sequence[str] | TagScheme,
                  word_ids: Sequence[Sequence[int]] | None = None) -> dict[str, float]:
    """Intent accuracy and entity-level slot precision, recall and F1 (exact span and type).

    With `word_ids` (per sentence, -1 for special tokens) predictions are read per word, as the
    reader reads them (`word_level`).
    """
    predicted_intent = intent_logits.argmax(-1)
    predicted_tags = slot_logits.argmax(-1)
    tp = fp = fn = 0
    for row in range(len(tag_labels)):
        valid = tag_labels[row] != IGNORE
        gold = tag_spans(np.where(valid, tag_labels[row], 0), tag_names)
        predicted = predicted_tags[row]
        if word_ids is not None and word_ids[row] is not None:
            words = list(word_ids[row][:len(predicted)])
            predicted = np.asarray(word_level(predicted.tolist(), words, tag_names))
        pred = tag_spans(np.where(valid, predicted, 0), tag_names)
        tp += len(gold & pred)
        fp += len(pred - gold)
        fn += len(gold - pred)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"intent_accuracy": float(np.mean(predicted_intent == intent_labels)), "slot_f1": f1,
            "slot_precision": precision, "slot_recall": recall}


# --------------------------------------------------------------------------------------------
# The task

class IntentSlotTask:
    """Joint intent + slot tagging over a fixed label space.

    Args:
        intents: intent names, in the order of the model's `intent_logits`.
        tags: BIO tag names ("O" first), in the order of `slot_logits`.
        value_table: slot → {spoken words → value} for closed lists (default none).
        max_length: longest token sequence the models take (default 64); longer text is cut.
        threshold: intent confidence below which the reader answers `not_understood` (default 0.5).
        language: the ISO 639-1 code of the model's language (default "en"); text with no letter of
            its script is not understood. None: no script check.
        intent_slots: intent → the slots it can take (default none known): a caller's context area
            fills only intents that take an area.
        temperature: divides the intent logits before the softmax (default 1.0); fitted on held-out
            data (`edgeagent.tasks.calibration.fit_temperature`) it makes confidence calibrated.

    An intent named `not_understood` among `intents` is a class of its own: the model was taught
    to say when it does not understand, and answering it is not understanding.

    Raises:
        InputError: empty or duplicate label names, a tag list without "O", a bad length, threshold,
            value table or language.
    """

    name = NAME
    primary_metric = "intent_accuracy"
    batch_invariant = True  # padding is masked in attention and pooling

    def __init__(self, intents: Sequence[str], tags: Sequence[str], *,
                 value_table: Mapping[str, Mapping[str, Any]] | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                 threshold: float = 0.5, language: str = "en", intent_slots: Mapping[str, Sequence[str]] | None = None,
                 temperature: float = 1.0) -> None:
        self.intents = require_labels(intents, "intents")
        self.tags = require_labels(tags, "tags")
        if "O" not in self.tags:
            raise InputError("tags must include 'O' (outside any slot)", field="tags")
        if type(max_length) is not int or not 2 <= max_length <= MAX_LENGTH:
            raise InputError(f"max_length must be an integer from 2 to {MAX_LENGTH}, got {max_length!r:.40}",
                             field="max_length")
        threshold = require_fraction(threshold, "threshold")
        if value_table is not None and (not isinstance(value_table, Mapping) or not all(
                isinstance(t, Mapping) and all(isinstance(k, str) for k in t) for t in value_table.values())):
            raise InputError("value_table must map each slot to an object of spoken words → value", field="value_table")
        if language is not None and not isinstance(language, str):
            raise InputError(f"language must be a language code such as 'en', got {language!r:.40}", field="language")
        self.value_table = {str(slot): {str(k): v for k, v in table.items()}
                            for slot, table in (value_table or {}).items()}
        self.max_length, self.threshold, self.language = max_length, threshold, language
        if not (isinstance(temperature, (int, float)) and 0.01 <= float(temperature) <= 100):
            raise InputError(f"temperature must be a number in [0.01, 100], got {temperature!r}", field="temperature")
        self.temperature = float(temperature)
        self.intent_slots = {str(k): tuple(str(s) for s in v) for k, v in (intent_slots or {}).items()}
        self.scheme = tag_scheme(self.tags)

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("intent_logits", "intent", len(self.intents)),
                Head("slot_logits", "tags", len(self.tags), per_token=True))

    # -- evaluation ------------------------------------------------------------------------

    @staticmethod
    def label_array(intent: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """Evaluation labels: column 0 the intent id, then the padded tag ids."""
        return np.concatenate([np.asarray(intent)[:, None], np.asarray(tags)], axis=1)

    def metrics(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None, *,
                word_ids: Sequence[Sequence[int]] | None = None, **_: Any) -> dict[str, float]:
        if labels is None or "intent_logits" not in outputs or "slot_logits" not in outputs:
            return {}
        slot_logits = outputs["slot_logits"]
        words = word_ids if word_ids is not None and len(word_ids) == len(labels) else None
        return joint_metrics(outputs["intent_logits"], slot_logits, labels[:, 0],
                             labels[:, 1:1 + slot_logits.shape[1]], self.scheme, word_ids=words)

    def score(self, predictions: Sequence[Mapping[str, np.ndarray]],
              examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Metrics of per-example predictions (unpadded, as the trainer's `predict` returns them)."""
        intent = np.stack([p["intent_logits"] for p in predictions])
        length = max(len(e["tags"]) for e in examples)
        slots = np.zeros((len(examples), length, len(self.tags)), np.float32)
        gold = np.full((len(examples), length), IGNORE, np.int64)
        for row, (p, e) in enumerate(zip(predictions, examples)):
            slots[row, :len(e["tags"])] = p["slot_logits"]
            gold[row, :len(e["tags"])] = e["tags"]
        words = [e.get("word_ids") for e in examples]
        return joint_metrics(intent, slots, np.asarray([e["intent"] for e in examples]), gold, self.scheme,
                             word_ids=words if all(w is not None for w in words) else None)

    def training_metric(self, predictions, examples) -> float:
        """Mean of intent accuracy and slot F1: early stopping must not trade one for the other."""
        scores = self.score(predictions, examples)
        return (scores["intent_accuracy"] + scores["slot_f1"]) / 2

    def export_spec(self) -> ExportSpec:
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "intent_logits": {0: "batch"}, "slot_logits": {0: "batch", 1: "sequence"}}
        return ExportSpec(INPUTS, OUTPUTS, axes)

    def check_outputs(self, outputs: Sequence[TensorSpec], where: str) -> None:
        check_head_widths(self, outputs, where)

    # -- reading ---------------------------------------------------------------------------

    def reader(self, tokenizer, *, threshold: float | None = None, **_: Any) -> IntentSlotReader:
        return IntentSlotReader(self, tokenizer, threshold=self.threshold if threshold is None else threshold)

    def apply_context(self, call: ToolCall, context: Mapping[str, str]) -> ToolCall:
        """Fill the area (or floor) the utterance leaves out, or says as "here", from the caller's context,
        as Home Assistant does with a satellite's area; only for intents that take one."""
        return fill_context(call, context, self.intent_slots)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "intents": self.intents, "tags": self.tags, "value_table": self.value_table,
                "max_length": self.max_length, "threshold": self.threshold, "language": self.language,
                "intent_slots": {k: list(v) for k, v in self.intent_slots.items()}, "temperature": self.temperature}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IntentSlotTask:
        return cls(data.get("intents"), data.get("tags"), value_table=data.get("value_table") or {},
                   max_length=data.get("max_length", DEFAULT_MAX_LENGTH), threshold=data.get("threshold", 0.5),
                   language=data.get("language", "en"), intent_slots=data.get("intent_slots") or {},
                   temperature=data.get("temperature", 1.0))


class IntentSlotReader:
    """Tokenizer + the task's labels + slot-value normalisation: text → ToolCall on a Session.

    Text is cleaned first (terminal escapes, control characters and lone surrogates removed), and
    text with no letter of the task's language, or whose word pieces are mostly [UNK], is not
    understood without reaching the model (`tasks.text.TextGate`).
    """

    def __init__(self, task: IntentSlotTask, tokenizer, *, threshold: float | None = None) -> None:
        self.task, self.tokenizer = task, tokenizer
        self.intents, self.tags, self.scheme = task.intents, task.tags, task.scheme
        self.max_length = task.max_length
        self.threshold = task.threshold if threshold is None else float(threshold)
        self.value_table = task.value_table
        self.gate = TextGate(tokenizer, task.language)
        if task.language:  # build the number-word table at load, not on a user's first request
            spoken_numbers(task.language)
        tokenizer.no_truncation()  # truncation is done here, so that it can be reported

    def encode(self, text: str):
        encoding = self.tokenizer.encode(text)
        ids = encoding.ids
        truncated = len(ids) > self.max_length
        if truncated:  # keep the closing special token
            ids = ids[:self.max_length - 1] + ids[-1:]
        return np.asarray([ids], np.int64), encoding, truncated

    def check(self, session) -> None:
        """Fail now, not on a user's request, when this tokenizer and labels do not fit the model: the
        tokenizer's highest id must be inside the model's embedding and the outputs as wide as the labels.

        Raises:
            ArtifactError: naming what does not fit.
        """
        top = highest_id(self.tokenizer)
        ids = np.asarray([[top]], np.int64)
        try:
            outputs = session.run(self._feeds(session, ids, np.ones_like(ids)))
        except Exception as exc:  # a runtime's own error for an index past the embedding
            raise ArtifactError(f"the model fails on token id {top}, the tokenizer's highest, so the tokenizer "
                                f"belongs to another model ({type(exc).__name__}: {exc})") from None
        for name, labels in (("intent_logits", self.intents), ("slot_logits", self.tags)):
            width = np.asarray(outputs[name]).shape[-1]
            if width != len(labels):
                raise ArtifactError(f"output {name!r} has {width} classes but the task lists {len(labels)} "
                                    "labels; the labels belong to another model")

    def act(self, session, text: str) -> ToolCall:
        """One utterance; never raises for bad text (empty or unreadable text is not understood)."""
        return self.act_batch(session, [text])[0]

    def act_batch(self, session, texts: Sequence[str]) -> list[ToolCall]:
        """act() for many utterances in one model call, padded to the longest.

        Gives the same calls as act() one by one (padding is masked); each call's latency_ms is
        the whole batch's time, which is what each caller waited for. Empty, non-string or
        unreadable items are not understood and do not reach the model.
        """
        start = time.perf_counter()
        calls: list[ToolCall | None] = [None] * len(texts)
        live, encoded = [], []
        for i, raw in enumerate(texts):
            text = self.gate.clean(raw)
            if text is not None:
                item = self.encode(text)
                if not self.gate.mostly_unknown(item[1]):
                    live.append((i, text))
                    encoded.append(item)
                    continue
            calls[i] = ToolCall(NOT_UNDERSTOOD, text=clean_text(raw) if isinstance(raw, str) else "")
        if live:
            width = max(ids.shape[1] for ids, _, _ in encoded)
            ids = np.zeros((len(live), width), np.int64)  # 0 is [PAD] in BERT vocabularies
            mask = np.zeros_like(ids)
            for row, (item_ids, _, _) in enumerate(encoded):
                ids[row, :item_ids.shape[1]] = item_ids[0]
                mask[row, :item_ids.shape[1]] = 1
            outputs = session.run(self._feeds(session, ids, mask))
            for row, ((i, text), (item_ids, encoding, truncated)) in enumerate(zip(live, encoded)):
                length = item_ids.shape[1]
                call = self.decode(outputs["intent_logits"][row], outputs["slot_logits"][row, :length],
                                   encoding, text)
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
        scaled = intent_logits if self.task.temperature == 1.0 else intent_logits / self.task.temperature
        best, confidence = softmax_confidence(scaled)
        if confidence < self.threshold or self.intents[best] == NOT_UNDERSTOOD:
            return ToolCall(NOT_UNDERSTOOD, confidence=confidence, text=text)
        tag_ids = slot_logits.argmax(-1).tolist()
        slots: dict[str, Any] = {}
        if any(tag_ids):  # most commands' tokens are not all O, but questions often are
            words = encoding.word_ids
            if len(words) > len(tag_ids):  # truncated: the model's last token is the closing one
                words = words[:len(tag_ids) - 1] + [None]
            # Special tokens (no word) never carry a slot.
            tag_ids = [t if w is not None else self.scheme.outside for t, w in zip(tag_ids, words)]
            tag_ids = word_level(tag_ids, words, self.scheme)
            offsets = encoding.offsets
            for start, end, slot in sorted(tag_spans(tag_ids, self.scheme)):
                surface = text[offsets[start][0]:offsets[end - 1][1]]
                slots.setdefault(slot, self.normalise(slot, surface))
        return ToolCall(self.intents[best], slots, confidence, text=text)

    def normalise(self, slot: str, surface: str) -> Any:
        words = surface.strip().lower()
        table = self.value_table.get(slot)
        if table and words in table:
            return table[words]
        number = parse_number(words, self.task.language)
        return surface.strip() if number is None else number
