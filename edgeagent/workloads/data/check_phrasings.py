"""Check the hand-written ha-intents data files beside this script (standard library + PyYAML).

    python edgeagent/workloads/data/check_phrasings.py

Every file must parse, every placeholder must be one the section allows, intents must be in the
label space, and the negatives must be many and distinct. Prints counts; exits 1 on a problem.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

INTENTS = frozenset("""
HassBroadcast HassCancelAllTimers HassCancelTimer HassClimateGetTemperature HassClimateSetFanMode
HassClimateSetTemperature HassDecreaseTimer HassFanSetSpeed HassGetCurrentDate HassGetCurrentTime
HassGetState HassGetWeather HassIncreaseTimer HassLawnMowerDock HassLawnMowerStartMowing HassLightSet
HassListAddItem HassListCompleteItem HassListRemoveItem HassMediaNext HassMediaPause
HassMediaPlayerMute HassMediaPlayerUnmute HassMediaPrevious HassMediaSearchAndPlay HassMediaUnpause
HassNevermind HassPauseTimer HassRespond HassSetPosition HassSetVolume HassSetVolumeRelative
HassShoppingListAddItem HassShoppingListCompleteItem HassStartTimer HassTimerStatus HassTurnOff
HassTurnOn HassUnpauseTimer HassVacuumCleanArea HassVacuumReturnToBase HassVacuumStart
""".split())
assert len(INTENTS) == 42

# Placeholder -> the slot it fills.
SLOT_PLACEHOLDERS = {p: p for p in (
    "name", "area", "floor", "brightness", "color", "temperature", "position", "volume_level",
    "volume_step", "percentage", "hours", "minutes", "seconds", "item", "message", "search_query",
    "media_class", "fan_mode")} | {"list": "name", "timer_name": "name"}
# Slots an entry may give in its own words (`fixed`) or by meaning (`implied`).
FIXED_SLOTS = {"state", "device_class", "volume_step", "fan_mode", "color", "media_class"}
IMPLIED_SLOTS = {"volume_step", "domain"}
DOMAINS = {"light", "switch", "fan", "climate", "cover", "lock", "media_player", "vacuum", "lawn_mower",
           "humidifier", "valve", "water_heater", "todo", "weather"}
DEVICE_CLASSES = {"awning", "blind", "curtain", "door", "garage", "gate", "shade", "shutter", "window"}
MIN_NEGATIVES = 400
MIN_KEYWORD_NAMES = 60

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
problems: list[str] = []


def problem(where: str, what: str) -> None:
    problems.append(f"{where}: {what}")


def load(name: str):
    path = HERE / name
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problem(name, f"does not load: {e}")
        return None


def placeholders(text: str) -> list[str]:
    if text.count("{") != text.count("}"):
        return ["<unbalanced braces>"]
    return PLACEHOLDER.findall(text)


def plain_strings(where: str, values, allowed: set[str] = frozenset(), required: set[str] = frozenset()):
    """A non-empty list of distinct, non-empty strings using only `allowed` placeholders."""
    if not isinstance(values, list) or not values:
        problem(where, "must be a non-empty list")
        return []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            problem(where, f"not a non-empty string: {v!r}")
            continue
        found = placeholders(v)
        for p in found:
            if p not in allowed:
                problem(where, f"placeholder {{{p}}} not allowed here: {v!r}")
        for p in required - set(found):
            problem(where, f"missing {{{p}}}: {v!r}")
    for v, n in Counter(v for v in values if isinstance(v, str)).items():
        if n > 1:
            problem(where, f"repeated {n} times: {v!r}")
    return [v for v in values if isinstance(v, str)]


def pattern_entry(where: str, entry) -> str | None:
    """A slot pattern: a string, or {pattern, fixed?, implied?}. Returns the pattern."""
    if isinstance(entry, dict):
        extra = set(entry) - {"pattern", "fixed", "implied"}
        if extra:
            problem(where, f"unknown keys {sorted(extra)} in {entry!r}")
        text = entry.get("pattern")
    else:
        text = entry
    if not isinstance(text, str) or not text.strip():
        problem(where, f"not a pattern: {entry!r}")
        return None
    found = placeholders(text)
    for p in found:
        if p not in SLOT_PLACEHOLDERS:
            problem(where, f"placeholder {{{p}}} is not an allowed slot placeholder: {text!r}")
    for p, n in Counter(found).items():
        if n > 1:
            problem(where, f"{{{p}}} used {n} times: {text!r}")
    if text != text.strip() or "  " in text:
        problem(where, f"stray spaces: {text!r}")
    if isinstance(entry, dict):
        filled = {SLOT_PLACEHOLDERS.get(p) for p in found}
        fixed = entry.get("fixed", {})
        if not isinstance(fixed, dict):
            problem(where, f"fixed must be a mapping: {entry!r}")
            fixed = {}
        bare = PLACEHOLDER.sub(" ", text)
        for slot, words in fixed.items():
            if slot not in FIXED_SLOTS:
                problem(where, f"fixed slot {slot!r} not one of {sorted(FIXED_SLOTS)}: {text!r}")
            if slot in filled:
                problem(where, f"slot {slot!r} both fixed and a placeholder: {text!r}")
            hits = re.findall(rf"(?<![\w']){re.escape(str(words))}(?![\w'])", bare)
            if len(hits) != 1:
                problem(where, f"fixed words {words!r} occur {len(hits)} times (need 1): {text!r}")
        implied = entry.get("implied", {})
        if not isinstance(implied, dict):
            problem(where, f"implied must be a mapping: {entry!r}")
            implied = {}
        for slot, value in implied.items():
            if slot not in IMPLIED_SLOTS:
                problem(where, f"implied slot {slot!r} not one of {sorted(IMPLIED_SLOTS)}: {text!r}")
            if slot in filled or slot in fixed:
                problem(where, f"slot {slot!r} implied and also spelled: {text!r}")
            if slot == "volume_step" and value not in ("up", "down"):
                problem(where, f"implied volume_step must be up or down: {text!r}")
            if slot == "domain" and value not in DOMAINS:
                problem(where, f"implied domain {value!r} unknown: {text!r}")
        if not fixed and not implied:
            problem(where, f"mapping entry without fixed or implied; write it as a string: {text!r}")
    return text


def pattern_list(where: str, entries) -> list[str]:
    if not isinstance(entries, list) or not entries:
        problem(where, "must be a non-empty list")
        return []
    texts = [t for t in (pattern_entry(where, e) for e in entries) if t is not None]
    for t, n in Counter(texts).items():
        if n > 1:
            problem(where, f"repeated {n} times: {t!r}")
    return texts


def by_intent(where: str, section) -> dict:
    if not isinstance(section, dict) or not section:
        problem(where, "must be a mapping of intents")
        return {}
    for intent in section:
        if intent not in INTENTS:
            problem(where, f"unknown intent {intent!r}")
    return section


def check_phrasings(counts: dict) -> set[str]:
    data = load("ha_phrasings.yaml")
    if not isinstance(data, dict):
        problem("ha_phrasings.yaml", "must be a mapping")
        return set()
    want = {"indirect", "question_forms", "fillers", "disfluencies", "synonyms", "noun_synonyms"}
    for key in want - set(data):
        problem("ha_phrasings.yaml", f"missing top-level key {key!r}")
    for key in set(data) - want:
        problem("ha_phrasings.yaml", f"unknown top-level key {key!r}")
    positives: set[str] = set()

    n = 0
    for intent, entries in by_intent("indirect", data.get("indirect")).items():
        texts = pattern_list(f"indirect.{intent}", entries)
        positives.update(texts)
        n += len(texts)
    counts["indirect (patterns)"] = n
    counts["indirect (intents)"] = len(data.get("indirect") or {})

    forms = data.get("question_forms")
    if not isinstance(forms, list) or not forms:
        problem("question_forms", "must be a non-empty list")
        forms = []
    seen = Counter()
    for f in forms:
        if not isinstance(f, dict) or set(f) != {"pattern", "form"}:
            problem("question_forms", f"each entry is {{pattern, form}}: {f!r}")
            continue
        text, form = f["pattern"], f["form"]
        need = {"base": "command", "ing": "command_ing"}.get(form)
        if need is None:
            problem("question_forms", f"form must be base or ing: {f!r}")
            continue
        if not isinstance(text, str) or placeholders(text) != [need]:
            problem("question_forms", f"form {form} needs exactly one {{{need}}} and nothing else: {text!r}")
        seen[text] += 1
    for text, k in seen.items():
        if k > 1:
            problem("question_forms", f"repeated {k} times: {text!r}")
    counts["question_forms (base)"] = sum(1 for f in forms if isinstance(f, dict) and f.get("form") == "base")
    counts["question_forms (ing)"] = sum(1 for f in forms if isinstance(f, dict) and f.get("form") == "ing")

    fillers = data.get("fillers") or {}
    if not isinstance(fillers, dict) or set(fillers) != {"prefix", "suffix"}:
        problem("fillers", "must have exactly prefix and suffix")
        fillers = {}
    for side in ("prefix", "suffix"):
        counts[f"fillers.{side}"] = len(plain_strings(f"fillers.{side}", fillers.get(side)))

    dis = data.get("disfluencies") or {}
    want_dis = {"hesitations": (set(), set()), "self_corrections": ({"wrong", "right"}, {"wrong", "right"}),
                "false_starts": (set(), set()), "repeat_frames": ({"word"}, {"word"})}
    if not isinstance(dis, dict):
        problem("disfluencies", "must be a mapping")
        dis = {}
    for key in set(dis) - set(want_dis):
        problem("disfluencies", f"unknown key {key!r}")
    for key, (allowed, required) in want_dis.items():
        counts[f"disfluencies.{key}"] = len(plain_strings(f"disfluencies.{key}", dis.get(key), allowed, required))

    n = nv = 0
    for intent, block in by_intent("synonyms", data.get("synonyms")).items():
        if not isinstance(block, dict) or not set(block) <= {"pattern", "verbs"} or "pattern" not in block:
            problem(f"synonyms.{intent}", "must be {pattern: [...], verbs: [...]}")
            continue
        texts = pattern_list(f"synonyms.{intent}.pattern", block["pattern"])
        positives.update(texts)
        n += len(texts)
        if "verbs" in block:
            nv += len(plain_strings(f"synonyms.{intent}.verbs", block["verbs"]))
    counts["synonyms (patterns)"] = n
    counts["synonyms (verbs)"] = nv

    nouns = data.get("noun_synonyms")
    if not isinstance(nouns, dict) or not nouns:
        problem("noun_synonyms", "must be a non-empty mapping")
        nouns = {}
    for noun, target in nouns.items():
        if isinstance(target, dict):
            if set(target) != {"domain", "device_class"} or target["device_class"] not in DEVICE_CLASSES:
                problem("noun_synonyms", f"{noun!r}: mapping must be {{domain, device_class}}: {target!r}")
            target = target.get("domain")
        if target not in DOMAINS:
            problem("noun_synonyms", f"{noun!r}: unknown domain {target!r}")
        if not isinstance(noun, str) or "{" in noun:
            problem("noun_synonyms", f"not a plain noun: {noun!r}")
    counts["noun_synonyms"] = len(nouns)
    return positives


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).split())


def check_negatives(counts: dict, positives: set[str]) -> None:
    data = load("ha_negatives.yaml")
    groups = ("chit_chat", "out_of_domain", "half_sentence", "near_miss")
    if not isinstance(data, dict) or set(data) != set(groups):
        problem("ha_negatives.yaml", f"must have exactly the groups {groups}")
        return
    everything: dict[str, str] = {}
    bags: dict[tuple, str] = {}
    total = 0
    for group in groups:
        values = plain_strings(f"negatives.{group}", data[group])
        total += len(values)
        counts[f"negatives.{group}"] = len(values)
        for v in dict.fromkeys(values):  # repeats within a group are reported by plain_strings
            key = normalise(v)
            bag = tuple(sorted(key.split()))
            if key in everything:
                problem(f"negatives.{group}", f"{v!r} duplicates {everything[key]!r}")
            elif bag in bags:
                problem(f"negatives.{group}", f"{v!r} is {bags[bag]!r} reordered")
            everything[key] = v
            bags[bag] = v
    counts["negatives (total)"] = total
    if total < MIN_NEGATIVES:
        problem("ha_negatives.yaml", f"{total} utterances, want at least {MIN_NEGATIVES}")
    # A negative may be a pattern with its slots left out ("make the"): that is a half-sentence.
    # It may not be a whole positive sentence.
    whole = {normalise(p) for p in positives if not placeholders(p)}
    for key, v in everything.items():
        if key in whole:
            problem("ha_negatives.yaml", f"{v!r} is also a positive pattern")


def check_keyword_names(counts: dict) -> None:
    data = load("ha_keyword_names.yaml")
    if not isinstance(data, dict) or set(data) != {"name", "area", "list"}:
        problem("ha_keyword_names.yaml", "must have exactly name, area and list")
        return
    names = data["name"]
    if isinstance(names, dict):
        for domain in names:
            if domain not in DOMAINS:
                problem("keyword_names.name", f"unknown domain {domain!r}")
        flat = [v for domain, vs in names.items() for v in plain_strings(f"keyword_names.name.{domain}", vs)]
    else:
        flat = plain_strings("keyword_names.name", names)
    for v, n in Counter(flat).items():
        if n > 1:
            problem("keyword_names.name", f"{v!r} under {n} domains")
    areas = plain_strings("keyword_names.area", data["area"])
    lists = plain_strings("keyword_names.list", data["list"])
    for v in lists:
        if v.split()[-1] == "list" or "shopping" in v.split():
            problem("keyword_names.list", f"{v!r}: a list name may not end in 'list' nor contain 'shopping'")
    counts["keyword_names.name"] = len(flat)
    counts["keyword_names.area"] = len(areas)
    counts["keyword_names.list"] = len(lists)
    total = len(flat) + len(areas) + len(lists)
    counts["keyword_names (total)"] = total
    if total < MIN_KEYWORD_NAMES:
        problem("ha_keyword_names.yaml", f"{total} names, want at least {MIN_KEYWORD_NAMES}")


def main() -> int:
    counts: dict[str, int] = {}
    positives = check_phrasings(counts)
    check_negatives(counts, positives)
    check_keyword_names(counts)
    width = max(map(len, counts))
    for key, value in counts.items():
        print(f"{key:<{width}}  {value}")
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("\nall data files parse; every placeholder is allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
