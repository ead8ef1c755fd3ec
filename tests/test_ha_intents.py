"""The ha-intents workload: deterministic splits, unseen test names, BIO labels, metrics, decoding."""

from __future__ import annotations

import collections

import numpy as np
import pytest

ha = pytest.importorskip("edgeagent.workloads.ha_intents")
pytest.importorskip("hassil")
pytest.importorskip("home_assistant_intents")
tokenizers = pytest.importorskip("tokenizers")

from edgeagent.agent.runtime import NOT_UNDERSTOOD, Decoder  # noqa: E402
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
    assert set(intents) == with_sentences and len(intents) >= 40
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


def test_bio_labels_follow_the_tokens(tokenizer):
    text = "set the kitchen lamp to 40% brightness"
    name, level = text.index("kitchen lamp"), text.index("40")
    example = ha.Example(text, "HassLightSet", ((name, name + 12, "name", "kitchen lamp"),
                                                (level, level + 2, "brightness", 40)))
    encoded = ha.encode([example], tokenizer)
    _, tags = ha.label_space()
    labelled = [(tokenizer.id_to_token(i), tags[t] if t >= 0 else None)
                for i, t in zip(encoded.ids[0], encoded.tags[0])]
    assert labelled[0] == ("[CLS]", None) and labelled[-1] == ("[SEP]", None)
    assert ("kitchen", "B-name") in labelled and ("lamp", "I-name") in labelled
    assert ("40", "B-brightness") in labelled and ("set", "O") in labelled


def test_metrics_are_perfect_on_gold_and_drop_on_errors(tokenizer):
    encoded = ha.encode(ha.generate("dev")[:200], tokenizer)
    padded = encoded.padded()
    intents, tags = ha.label_space()
    intent_logits = np.eye(len(intents))[padded["intent"]]
    slot_logits = np.eye(len(tags))[np.where(padded["tags"] < 0, 0, padded["tags"])]
    perfect = ha.joint_metrics(intent_logits, slot_logits, padded["intent"], padded["tags"], tags)
    assert perfect["intent_accuracy"] == 1.0 and perfect["slot_f1"] == 1.0
    slot_logits[:, :, :] = np.eye(len(tags))[0]  # tag everything O
    worse = ha.joint_metrics(intent_logits[::-1], slot_logits, padded["intent"], padded["tags"], tags)
    assert worse["slot_f1"] == 0.0 and worse["intent_accuracy"] < 0.2


def test_tag_spans_reads_bio():
    tags = ["O", "B-name", "I-name", "B-area", "I-area"]
    assert ha.tag_spans([0, 1, 2, 0, 3, 4, 4], tags) == {(1, 3, "name"), (4, 7, "area")}
    assert ha.tag_spans([2, 2, 0], tags) == {(0, 2, "name")}  # an I- without B- still starts a span


def test_decoder_turns_tags_into_slot_values(tokenizer):
    decoder = Decoder.for_workload(tokenizer)
    text = "set the kitchen lamp to red"
    ids, encoding, truncated = decoder.encode(text)
    assert not truncated
    tokens = [tokenizer.id_to_token(i) for i in ids[0]]
    tags = decoder.tags
    wanted = {"kitchen": "B-name", "lamp": "I-name", "red": "B-color"}
    slot_logits = np.stack([np.eye(len(tags))[tags.index(wanted.get(t, "O"))] for t in tokens]) * 10
    intent_logits = np.eye(len(decoder.intents))[decoder.intents.index("HassLightSet")] * 10
    call = decoder.decode(intent_logits, slot_logits, encoding, text)
    assert call.intent == "HassLightSet" and call.confidence > 0.99
    assert call.slots == {"name": "kitchen lamp", "color": "red"}
    unsure = decoder.decode(np.zeros(len(decoder.intents)), slot_logits, encoding, text)
    assert unsure.intent == NOT_UNDERSTOOD
    long_ids, _, truncated = decoder.encode("lights " * 200)
    assert truncated and long_ids.shape[1] == decoder.max_length


def test_word_level_reading_gives_each_word_one_tag():
    _, tags = ha.label_space()
    index = {n: i for i, n in enumerate(tags)}

    def read(names, words):
        return [tags[t] for t in ha.word_level([index[n] for n in names], words, tags)]

    # "project ##or": the tagger marked only the second piece; the word is the name.
    assert read(["O", "O", "I-name", "O"], [None, 0, 0, None]) == ["O", "I-name", "I-name", "O"]
    assert ha.tag_spans([index[t] for t in read(["O", "O", "I-name", "O"], [-1, 0, 0, -1])], tags) == \
        {(1, 3, "name")}
    # "play ##room": one word cannot hold two slots; its first tagged piece decides.
    assert read(["O", "B-area", "B-name", "O"], [None, 0, 0, None]) == ["O", "B-area", "I-area", "O"]
    # Words keep their own spans.
    assert read(["O", "B-name", "I-name", "B-name", "O"], [None, 0, 0, 1, None]) == \
        ["O", "B-name", "I-name", "B-name", "O"]
