"""The ha-intents phrasings: labelled sentences beyond the templates, with exact spans."""

from __future__ import annotations

import collections

import pytest

ha = pytest.importorskip("edgeagent.workloads.ha_intents")
pytest.importorskip("hassil")
pytest.importorskip("yaml")
pytest.importorskip("unicode_rbnf")

from edgeagent.tasks import NOT_UNDERSTOOD  # noqa: E402
from edgeagent.workloads import ha_phrasing  # noqa: E402


@pytest.fixture(scope="module")
def train():
    return ha.robust_split("train")


def test_every_intent_gets_phrasings_and_negatives_are_not_understood(train):
    counts = collections.Counter(e.intent for e in train)
    intents, _ = ha.label_space()
    assert intents[-1] == NOT_UNDERSTOOD
    assert set(counts) == set(intents)
    assert min(counts[i] for i in intents[:-1]) >= 0.5 * ha.ROBUST_PER_INTENT["train"]
    negatives = [e for e in train if e.intent == NOT_UNDERSTOOD]
    assert len(negatives) > 300 and all(not e.spans for e in negatives)


def test_spans_point_at_their_values_after_every_transform(train):
    for example in train:
        for start, end, slot, value in example.spans:
            surface = example.text[start:end]
            assert surface and surface == surface.strip(), example
            if isinstance(value, str) and slot in ("name", "area", "floor", "item"):
                assert surface.lower() == value.lower(), example
    assert not any("  " in e.text or "{" in e.text for e in train)


def test_transcripts_say_numbers_as_words_and_keep_the_number_as_value():
    import random

    sampler = ha_phrasing.PhrasingSampler("train", ha.closed_list_values(), seed=0, rng=random.Random(0))
    text, spans = sampler.transcript("Set the Desk Lamp to 45%.", ((8, 17, "name", "Desk Lamp"), (21, 23, "brightness", 45)))
    assert text == "set the desk lamp to forty-five percent"
    assert [(text[s:e], slot, v) for s, e, slot, v in spans] == [("desk lamp", "name", "Desk Lamp"),
                                                               ("forty-five", "brightness", 45)]
    assert ha_phrasing.number_words(18.5) == "eighteen point five"


def test_dev_and_test_stay_unseen_and_dev_has_its_own_negatives(train):
    held = {e.text.lower() for split in ("dev", "test") for e in ha.generate(split)}
    assert not any(e.text.lower() in held for e in train)
    dev = ha.robust_split("dev")
    assert not {e.text.lower() for e in dev} & {e.text.lower() for e in train}
    train_negatives = {t for t, _ in ha_phrasing.negatives("train")}
    dev_negatives = {t for t, _ in ha_phrasing.negatives("dev")}
    assert dev_negatives and not train_negatives & dev_negatives
    assert ha.robust_split("test") == ()
    # Keyword names ("timer light") train the router, never name a dev sentence's device.
    keyword = {n.lower() for n in ha_phrasing.keyword_names()["name"]}
    assert any(v.lower() in keyword for e in train for _, _, s, v in e.spans if s == "name" and isinstance(v, str))
    assert not any(v.lower() in keyword for e in dev for _, _, s, v in e.spans if s == "name" and isinstance(v, str))


def test_training_negatives_also_come_with_the_positives_surface_transforms(train):
    written = {t for t, _ in ha_phrasing.negatives("train")}
    negatives = [e.text for e in train if e.intent == NOT_UNDERSTOOD]
    varied = [t for t in negatives if t not in written]
    # About half the written ones again, each with a filler, a hesitation or a recogniser's spelling.
    assert 0.3 * len(written) < len(varied) < 0.7 * len(written)
    assert all(t == " ".join(t.split()) and t.lower() not in {w.lower() for w in written} for t in varied)
    fill = ha_phrasing.resources()["ha_phrasings"]["fillers"]
    assert any(t.startswith(tuple(f + " " for f in fill["prefix"])) or t.endswith(tuple(fill["suffix"]))
               for t in varied)
    dev_written = {t for t, _ in ha_phrasing.negatives("dev")}
    assert {e.text for e in ha.robust_split("dev") if e.intent == NOT_UNDERSTOOD} <= dev_written


def test_the_phrasings_are_deterministic(train):
    ha.robust_split.cache_clear()
    assert [e.to_json() for e in ha.robust_split("train")[:200]] == [e.to_json() for e in train[:200]]
