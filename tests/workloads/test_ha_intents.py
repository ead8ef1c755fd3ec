"""The ha-intents workload: deterministic splits, unseen test names, BIO labels, metrics, decoding."""

from __future__ import annotations

import collections

import numpy as np
import pytest

ha = pytest.importorskip("edgeagent.workloads.ha_intents")
pytest.importorskip("hassil")
pytest.importorskip("home_assistant_intents")
tokenizers = pytest.importorskip("tokenizers")

from edgeagent.workloads import ha_names  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    try:
        return ha.load_tokenizer()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no tokenizer: {exc}")


def test_splits_are_deterministic_and_cover_every_intent():
    train = ha.generate("train")
    assert [e.to_json() for e in train[:50]] == [e.to_json() for e in ha.generate("train")[:50]]
    intents, tags = ha.label_space()
    templates = ha.load_templates()
    with_sentences = {n for n, i in templates.intents.items() if any(d.sentences for d in i.data)}
    # Every intent with template sentences, then not_understood: what negatives are labelled.
    assert set(intents[:-1]) == with_sentences and intents[-1] == "not_understood" and len(intents) >= 41
    assert {e.intent for e in train} == with_sentences
    counts = collections.Counter(e.intent for e in train)
    assert max(counts.values()) <= ha.SPLITS["train"]
    assert tags[0] == "O" and {"B-name", "I-name", "B-area", "B-brightness", "B-color"} <= set(tags)
    assert ha.generate("test", seed=1)[0].text != ha.generate("test", seed=0)[0].text


def test_test_names_never_occur_in_training():
    for list_name, values in ha_names.SPLIT_LISTS.items():
        parts = {s: set(ha.split_values(values, s)) for s in ("train", "dev", "test")}
        assert not parts["train"] & parts["test"] and not parts["train"] & parts["dev"], list_name
        assert parts["test"], list_name
    train_names = {v for e in ha.generate("train") for _, _, slot, v in e.spans if slot in ("name", "area", "floor")}
    test_names = {v for e in ha.generate("test") for _, _, slot, v in e.spans if slot in ("area", "floor")}
    assert test_names and not (test_names & train_names)
    train_text = {e.text.lower() for e in ha.generate("train")}
    assert not any(e.text.lower() in train_text for e in ha.generate("test"))


def test_spans_point_at_their_values():
    for example in ha.generate("dev")[:500]:
        for start, end, slot, value in example.spans:
            surface = example.text[start:end]
            assert surface == surface.strip() and surface
            if isinstance(value, str) and slot in ("name", "area", "floor", "item"):
                assert surface == value
