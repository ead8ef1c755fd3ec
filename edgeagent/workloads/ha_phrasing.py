"""Training sentences beyond Home Assistant's templates, for the ha-intents router (issue 22).

People do not talk like templates. From the hand-written resources in `data/` (see its
README: written by hand, independently of the robustness benchmark in `benchmarks/data/`), this
module makes labelled sentences with the same spans as the sampler's:

- patterns: indirect requests ("it's too dark in the {area}") and verb synonyms ("kill the
  {name}"), their placeholders filled from the split's own name lists;
- wrappers around template sentences: question forms ("could you …?"), politeness and fillers
  at either end, hesitations, false starts, repeated words and self-corrections of a slot;
- speech-recogniser transcripts: lower case, no punctuation, numbers said as words
  (`unicode-rbnf`, the library Home Assistant's own number parsing uses), "percent" spelled out;
- names made of other intents' keywords ("timer light"), added to the training names;
- negatives (chit-chat, requests out of the home's domain, half-sentences, near misses)
  labelled `not_understood`, split between train and dev by a stable hash.

Every transform keeps the slots' character spans, so tags stay exact. Sentences equal to a dev
or test sentence are dropped, as the transfer set does.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..tasks import NOT_UNDERSTOOD
from . import ha_names

DATA = Path(__file__).with_name("data")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
NUMERIC = {"brightness": (1, 100), "position": (0, 100), "volume_level": (0, 100), "percentage": (1, 100),
           "hours": (1, 12), "minutes": (1, 90), "seconds": (5, 90), "temperature": (16, 28), "volume_step": (5, 30)}
CLOSED = ("color", "fan_mode", "media_class")
# Which name list fills {name} for an intent's device (as the templates' domains do).
NAME_LIST = {"HassVacuumStart": "name@vacuum", "HassVacuumReturnToBase": "name@vacuum",
             "HassVacuumCleanArea": "name@vacuum", "HassLawnMowerDock": "name@lawn_mower",
             "HassLawnMowerStartMowing": "name@lawn_mower", "HassGetWeather": "name@weather",
             "HassMediaPause": "name@media_player", "HassMediaUnpause": "name@media_player",
             "HassMediaNext": "name@media_player", "HassMediaPrevious": "name@media_player",
             "HassSetVolume": "name@media_player", "HassSetVolumeRelative": "name@media_player",
             "HassMediaPlayerMute": "name@media_player", "HassMediaPlayerUnmute": "name@media_player",
             "HassMediaSearchAndPlay": "name@media_player", "HassClimateSetTemperature": "name@climate",
             "HassClimateGetTemperature": "name@climate", "HassClimateSetFanMode": "name@climate",
             "HassSetPosition": "name@cover"}
ITEM_LIST = {"HassShoppingListAddItem": "shopping_list_item", "HassShoppingListCompleteItem": "shopping_list_item"}
NEGATIVE_DEV_SHARE = 0.2  # of the hand-written negatives, held out for the dev split
NEGATIVE_VARIED_SHARE = 0.5  # of the training negatives, added again with a surface transform
# Verbs the question forms turn into their -ing form ("would you mind turning on ...").
_ING = {"turn": "turning", "switch": "switching", "set": "setting", "put": "putting", "dim": "dimming",
        "stop": "stopping", "shut": "shutting", "cut": "cutting", "start": "starting", "open": "opening",
        "close": "closing", "play": "playing", "pause": "pausing", "make": "making", "change": "changing",
        "add": "adding", "cancel": "cancelling", "tell": "telling", "check": "checking", "lower": "lowering",
        "raise": "raising", "increase": "increasing", "decrease": "decreasing", "mute": "muting",
        "unmute": "unmuting", "resume": "resuming", "skip": "skipping", "go": "going", "send": "sending",
        "remove": "removing", "delete": "deleting", "vacuum": "vacuuming", "clean": "cleaning",
        "dock": "docking", "return": "returning", "lock": "locking", "unlock": "unlocking",
        "bring": "bringing", "give": "giving", "let": "letting", "get": "getting", "show": "showing"}


@functools.cache
def resources() -> dict[str, Any]:
    """The hand-written YAML resources, parsed once.

    Raises:
        InputError: PyYAML is missing (the agent extra brings it) or a file does not parse.
    """
    try:
        import yaml
    except ImportError:
        raise InputError("the ha-intents phrasings need PyYAML: pip install 'edgeagent[agent]'") from None
    loaded = {}
    for name in ("ha_phrasings", "ha_negatives", "ha_keyword_names"):
        try:
            loaded[name] = yaml.safe_load((DATA / f"{name}.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read {DATA / name}.yaml: {exc}") from None
    return loaded


def _stable_share(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def negatives(split: str) -> list[tuple[str, str]]:
    """(text, group) of the hand-written negatives for `split`: train, or dev (a stable fifth); test none."""
    if split == "test":
        return []
    found = []
    for group, texts in sorted(resources()["ha_negatives"].items()):
        for text in texts:
            held = _stable_share(text) < NEGATIVE_DEV_SHARE
            if held == (split == "dev"):
                found.append((str(text).strip(), group))
    return found


def keyword_names() -> dict[str, list[str]]:
    """Training names made of other intents' keywords, by slot: name (flattened), area, list."""
    data = resources()["ha_keyword_names"]
    names = data.get("name") or {}
    flat = [n for values in (names.values() if isinstance(names, dict) else [names]) for n in values]
    return {"name": flat, "area": list(data.get("area") or []), "list": list(data.get("list") or [])}


def number_words(value: int | float) -> str:
    """A number as a speech recogniser writes it ("forty-two", "eighteen point five")."""
    engine = _engine()
    if isinstance(value, float) and not value.is_integer():
        whole, _, fraction = f"{value}".partition(".")
        return f"{engine.format_number(int(whole)).text} point " + " ".join(
            engine.format_number(int(d)).text for d in fraction)
    return engine.format_number(int(value)).text


@functools.cache
def _engine():
    from unicode_rbnf import RbnfEngine

    return RbnfEngine.for_language("en")


Pieces = list[tuple[str, tuple[str, Any] | None]]


def to_pieces(text: str, spans: Sequence[tuple]) -> Pieces:
    """A sentence as (text, slot) pieces: the outside text and each slot's span."""
    pieces: Pieces = []
    at = 0
    for start, end, slot, value in sorted(spans):
        if start > at:
            pieces.append((text[at:start], None))
        pieces.append((text[start:end], (slot, value)))
        at = end
    if at < len(text):
        pieces.append((text[at:], None))
    return pieces


def from_pieces(pieces: Pieces) -> tuple[str, tuple[tuple[int, int, str, Any], ...]]:
    """Join pieces, collapsing whitespace, and return the slots' spans in the joined text."""
    text, spans = "", []
    for chunk, slot in pieces:
        chunk = re.sub(r"\s+", " ", chunk)
        if slot is None:
            if not text or text.endswith(" "):
                chunk = chunk.lstrip()
            text += chunk
            continue
        chunk = chunk.strip()
        if not chunk:
            continue
        if text and not text.endswith(" ") and not text.endswith(("'", "-")):
            text += " "
        spans.append((len(text), len(text) + len(chunk), slot[0], slot[1]))
        text += chunk
    stripped = text.rstrip()
    return stripped, tuple(s for s in spans if s[1] <= len(stripped))


class PhrasingSampler:
    """Labelled sentences for one split from the resources, with names from that split only.

    Args:
        split: train or dev (test sentences stay template-only: they measure the templates).
        value_table: slot → {spoken → value}, the closed lists (`ha_intents.closed_list_values`).
        seed: the split's name partition seed (as `ha_intents.generate` takes it).
        rng: the random stream sentences are drawn from.
    """

    def __init__(self, split: str, value_table: dict[str, dict[str, Any]], *, seed: int, rng: random.Random) -> None:
        from .ha_intents import split_values

        if split not in ("train", "dev"):
            raise InputError(f"phrasings are made for the train and dev splits, not {split!r}", field="split")
        self.rng, self.value_table = rng, value_table
        self.names = {k: split_values(v, split, seed) for k, v in ha_names.SPLIT_LISTS.items()}
        if split == "train":  # names borrowing other intents' keywords, to learn a slot's place
            extra = keyword_names()
            self.names["name"] = self.names["name"] + extra["name"]
            self.names["area"] = self.names["area"] + extra["area"]
            self.names["name@todo"] = self.names["name@todo"] + extra["list"]
        self.data = resources()["ha_phrasings"]
        self.closed = {slot: sorted(self.value_table.get(slot, {}).items()) for slot in CLOSED}

    # -- values ------------------------------------------------------------------------------

    def value(self, intent: str, placeholder: str) -> tuple[str, str, Any]:
        """(spoken text, slot, value) for one placeholder of a pattern of `intent`."""
        rng = self.rng
        if placeholder == "name":
            text = rng.choice(self.names.get(NAME_LIST.get(intent, "name"), self.names["name"]))
            return text, "name", text
        if placeholder == "list":
            text = rng.choice(self.names["name@todo"])
            return text, "name", text
        if placeholder == "timer_name":
            text = rng.choice(self.names["timer_name"])
            return text, "name", text
        if placeholder == "item":
            text = rng.choice(self.names[ITEM_LIST.get(intent, "todo_list_item")])
            return text, "item", text
        if placeholder in ("area", "floor", "message", "search_query"):
            text = rng.choice(self.names[placeholder])
            return text, placeholder, text
        if placeholder in CLOSED and self.closed.get(placeholder):
            spoken, value = rng.choice(self.closed[placeholder])
            return spoken, placeholder, value
        if placeholder in NUMERIC:
            low, high = NUMERIC[placeholder]
            number: int | float = rng.randint(low, high)
            if placeholder == "temperature" and rng.random() < 0.2:
                number += 0.5
            return str(number), placeholder, number
        raise InputError(f"placeholder {{{placeholder}}} has no values", field="placeholder")

    def fill(self, intent: str, pattern: str, fixed: dict[str, str] | None = None) -> tuple[str, tuple] | None:
        """A pattern with its placeholders filled, as (text, spans); None where a fixed slot's words
        are not in the closed list."""
        pieces: Pieces = []
        at = 0
        for match in PLACEHOLDER.finditer(pattern):
            pieces.append((pattern[at:match.start()], None))
            text, slot, value = self.value(intent, match.group(1))
            pieces.append((text, (slot, value)))
            at = match.end()
        pieces.append((pattern[at:], None))
        text, spans = from_pieces(pieces)
        for slot, words in (fixed or {}).items():  # the slot's value said in the pattern's own words
            value = self.value_table.get(slot, {}).get(str(words).lower())
            found = [m for m in re.finditer(rf"\b{re.escape(str(words))}\b", text)]
            if value is None or len(found) != 1:
                return None
            spans = tuple(sorted((*spans, (found[0].start(), found[0].end(), slot, value))))
        return text, spans

    def patterns(self, intent: str, count: int) -> list[tuple[str, tuple]]:
        """Up to `count` sentences from the intent's indirect and synonym patterns."""
        entries = list((self.data.get("indirect") or {}).get(intent) or [])
        entries += list(((self.data.get("synonyms") or {}).get(intent) or {}).get("pattern") or [])
        if not entries:
            return []
        made = []
        for _ in range(count):
            entry = self.rng.choice(entries)
            pattern, fixed = (entry, None) if isinstance(entry, str) else (entry["pattern"], entry.get("fixed"))
            filled = self.fill(intent, pattern, fixed)
            if filled is not None:
                made.append(filled)
        return made

    # -- transforms of a labelled sentence ------------------------------------------------------

    def question(self, text: str, spans: tuple) -> tuple[str, tuple]:
        """A request or question around the command ("could you …?", "would you mind …ing")."""
        forms = self.data.get("question_forms") or []
        first = text.split(" ", 1)[0]
        usable = [f for f in forms if f.get("form") == "base" or first.lower() in _ING]
        form = self.rng.choice(usable)
        command = to_pieces(text, spans)
        if form.get("form") == "ing":
            head, slot = command[0]
            if slot is None:
                command[0] = (_ING[first.lower()] + head[len(first):], None)
        slot = "{command_ing}" if "{command_ing}" in form["pattern"] else "{command}"
        before, _, after = form["pattern"].partition(slot)
        return from_pieces([(before, None), *command, (after, None)])

    def fillers(self, text: str, spans: tuple) -> tuple[str, tuple]:
        fill = self.data.get("fillers") or {}
        pieces = to_pieces(text, spans)
        if fill.get("prefix") and self.rng.random() < 0.6:
            pieces.insert(0, (self.rng.choice(fill["prefix"]) + " ", None))
        if fill.get("suffix") and (len(pieces) < 2 or self.rng.random() < 0.6):
            pieces.append((" " + self.rng.choice(fill["suffix"]), None))
        return from_pieces(pieces)

    def disfluent(self, text: str, spans: tuple, intent: str) -> tuple[str, tuple]:
        """A hesitation, a false start, a repeated word or a corrected slot value."""
        dis = self.data.get("disfluencies") or {}
        pieces = to_pieces(text, spans)
        kind = self.rng.choice(["hesitation", "false_start", "repeat", "correction"])
        slotted = [i for i, (_, s) in enumerate(pieces) if s is not None and s[0] in ("name", "area", "floor")]
        if kind == "correction" and slotted:
            i = self.rng.choice(slotted)
            chunk, (slot, value) = pieces[i]
            placeholder = "area" if slot == "area" else "floor" if slot == "floor" else "name"
            wrong, _, _ = self.value(intent, placeholder)
            if wrong != chunk:
                frame = self.rng.choice([f for f in dis.get("self_corrections") or ["{wrong}, no, {right}"]
                                         if f.index("{wrong}") < f.index("{right}")])
                before, _, rest = frame.partition("{wrong}")
                middle, _, after = rest.partition("{right}")
                pieces[i:i + 1] = [(before + wrong + middle, None), (chunk, (slot, value)), (after, None)]
                return from_pieces(pieces)
        if kind == "false_start" and dis.get("false_starts"):
            return from_pieces([(self.rng.choice(dis["false_starts"]) + " ", None), *pieces])
        outside = [i for i, (chunk, s) in enumerate(pieces) if s is None and chunk.strip()]
        if kind == "repeat" and outside:
            i = self.rng.choice(outside)
            words = pieces[i][0].split(" ")
            j = self.rng.choice([k for k, w in enumerate(words) if w] or [0])
            words[j] = f"{words[j]} {words[j]}" if self.rng.random() < 0.7 else f"{words[j]}, {words[j]}"
            pieces[i] = (" ".join(words), None)
            return from_pieces(pieces)
        hesitation = self.rng.choice(dis.get("hesitations") or ["um"])
        i = self.rng.randrange(len(pieces))
        pieces.insert(i, (f" {hesitation} ", None))
        return from_pieces(pieces)

    def transcript(self, text: str, spans: tuple) -> tuple[str, tuple]:
        """As a speech recogniser writes it: lower case, no punctuation, numbers as words."""
        pieces = []
        for chunk, slot in to_pieces(text, spans):
            if slot is not None and isinstance(slot[1], (int, float)) and not isinstance(slot[1], bool) \
                    and re.fullmatch(r"\d+(\.\d+)?", chunk.strip()):
                chunk = number_words(slot[1])
            chunk = chunk.replace("%", " percent").replace("°", " degrees")
            chunk = re.sub(r"[^\w\s'-]", " ", chunk.lower())
            pieces.append((chunk, slot))
        return from_pieces(pieces)

    def vary(self, text: str, spans: tuple, intent: str) -> tuple[str, tuple]:
        """One or two of the transforms, at random."""
        operations = [self.question, self.fillers, lambda t, s: self.disfluent(t, s, intent), self.transcript]
        first = self.rng.choice(operations[:3])
        text, spans = first(text, spans)
        if self.rng.random() < 0.35:
            text, spans = self.transcript(text, spans)
        return text, spans


def robust_examples(split: str, templates: Sequence, value_table: dict, *, per_intent: int, seed: int,
                    language: str = "en", taken: set[str] | None = None) -> list:
    """Sentences beyond the templates for `split`: per intent about `per_intent` from patterns and
    transformed template sentences, plus the split's negatives (intent `not_understood`, no slots).

    Args:
        split: train or dev.
        templates: the split's template sentences (`ha_intents.Example`), which the wrappers transform.
        value_table: the closed lists' values.
        per_intent: sentences per intent (half from patterns where the intent has some).
        seed: the split seed.
        language: only "en" has resources.
        taken: lower-cased sentences never to produce (the other splits' sentences).
    """
    from .ha_intents import Example

    if language != "en":
        raise InputError("the hand-written phrasings are English only", field="language")
    rng = random.Random(f"{seed}:phrasing:{split}")
    sampler = PhrasingSampler(split, value_table, seed=seed, rng=rng)
    taken = set(taken or ())
    by_intent: dict[str, list] = {}
    for example in templates:
        by_intent.setdefault(example.intent, []).append(example)
    made: list = []
    for intent in sorted(by_intent):
        seen: set[str] = set()
        want_patterns = per_intent // 2
        candidates = sampler.patterns(intent, want_patterns)
        for _ in range(per_intent * 3):
            if len(candidates) >= per_intent:
                break
            base = rng.choice(by_intent[intent])
            candidates.append(sampler.vary(base.text, base.spans, intent))
        for text, spans in candidates:
            if rng.random() < 0.15:  # some patterns as a recogniser would write them too
                text, spans = sampler.transcript(text, spans)
            key = text.lower()
            if not text or key in seen or key in taken:
                continue
            seen.add(key)
            made.append(Example(text, intent, tuple(spans)))
    for text, _group in negatives(split):
        if text.lower() not in taken:
            made.append(Example(text, NOT_UNDERSTOOD, ()))
        # In training, half the negatives again with the positives' surface transforms (fillers, a
        # hesitation, a recogniser's transcript), so that "um" or a missing question mark is no
        # evidence of a command. The dev split keeps its negatives as written.
        if split == "train" and rng.random() < NEGATIVE_VARIED_SHARE:
            varied, _ = (sampler.fillers if rng.random() < 0.5 else
                         (lambda t, s: sampler.disfluent(t, s, NOT_UNDERSTOOD)))(text, ())
            if rng.random() < 0.35:
                varied, _ = sampler.transcript(varied, ())
            varied = " ".join(varied.split())
            if varied and varied.lower() != text.lower() and varied.lower() not in taken:
                made.append(Example(varied, NOT_UNDERSTOOD, ()))
    rng.shuffle(made)
    return made
