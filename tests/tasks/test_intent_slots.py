"""Task intent-slots: BIO labels from spans, tag spans read per word, joint metrics, the reader."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.errors import ArtifactError, InputError
from edgeagent.ir import TensorSpec
from edgeagent.tasks import NOT_UNDERSTOOD, task_from_json
from edgeagent.tasks.intent_slots import IntentSlotTask, joint_metrics, tag_spans, word_level


def test_tag_spans_and_word_level_need_no_workload():
    tags = ["O", "B-name", "I-name"]
    assert tag_spans([0, 1, 2, 0], tags) == {(1, 3, "name")}
    assert word_level([0, 1, 0, 0], [None, 0, 0, None], tags) == [0, 1, 2, 0]


def test_the_task_round_trips_and_refuses_bad_label_spaces():
    task = IntentSlotTask(["A", "B"], ["O", "B-x", "I-x"], value_table={"x": {"one": 1}}, threshold=0.3)
    again = task_from_json(task.to_json())
    assert again.intents == ["A", "B"] and again.tags == ["O", "B-x", "I-x"] and again.threshold == 0.3
    assert again.value_table == {"x": {"one": 1}} and [h.classes for h in again.heads] == [2, 3]
    for bad in ({"intents": [], "tags": ["O"]}, {"intents": ["A", "A"], "tags": ["O"]},
                {"intents": ["A"], "tags": ["B-x"]}, {"intents": ["A"], "tags": ["O"], "threshold": 2}):
        with pytest.raises(InputError):
            IntentSlotTask(bad["intents"], bad["tags"], threshold=bad.get("threshold", 0.5))
    with pytest.raises(InputError, match="unknown task"):
        task_from_json({"name": "no-such-task"})


def test_outputs_that_disagree_with_the_labels_are_refused():
    task = IntentSlotTask(["A", "B", "C"], ["O", "B-x", "I-x"])
    good = [TensorSpec("intent_logits", "float32", ("batch", 3)),
            TensorSpec("slot_logits", "float32", ("batch", "sequence", 3))]
    task.check_outputs(good, "here")
    with pytest.raises(ArtifactError, match="3 classes but the task's 'intent' labels list 2"):
        IntentSlotTask(["A", "B"], ["O", "B-x", "I-x"]).check_outputs(good, "here")
    with pytest.raises(ArtifactError, match="no output 'slot_logits'"):
        task.check_outputs(good[:1], "here")


# The tests below read Home Assistant's label space and the teacher's WordPiece tokenizer.
ha = pytest.importorskip("edgeagent.workloads.ha_intents")


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("hassil")
    pytest.importorskip("tokenizers")
    try:
        return ha.load_tokenizer()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no tokenizer: {exc}")


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
    perfect = joint_metrics(intent_logits, slot_logits, padded["intent"], padded["tags"], tags)
    assert perfect["intent_accuracy"] == 1.0 and perfect["slot_f1"] == 1.0
    slot_logits[:, :, :] = np.eye(len(tags))[0]  # tag everything O
    worse = joint_metrics(intent_logits[::-1], slot_logits, padded["intent"], padded["tags"], tags)
    assert worse["slot_f1"] == 0.0 and worse["intent_accuracy"] < 0.2


def test_tag_spans_reads_bio():
    tags = ["O", "B-name", "I-name", "B-area", "I-area"]
    assert tag_spans([0, 1, 2, 0, 3, 4, 4], tags) == {(1, 3, "name"), (4, 7, "area")}
    assert tag_spans([2, 2, 0], tags) == {(0, 2, "name")}  # an I- without B- still starts a span


def test_reader_turns_tags_into_slot_values(tokenizer):
    decoder = ha.task().reader(tokenizer)
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


def test_spoken_numbers_become_numbers():
    pytest.importorskip("unicode_rbnf")
    from edgeagent.tasks.intent_slots import parse_number

    cases = {"thirty": 30, "forty five": 45, "forty-five": 45, "one hundred and five": 105, "a hundred": 100,
             "eighteen point five": 18.5, "30": 30, "30%": 30, "thirty percent": 30, "2.5": 2.5, "zero": 0}
    assert {words: parse_number(words, "en") for words in cases} == cases
    for words in ("kitchen", "five six", "thirty point", "point five", "forty five minutes", ""):
        assert parse_number(words, "en") is None, words
    assert parse_number("thirty", None) is None and parse_number("30", None) == 30


def test_reader_reads_number_words_as_the_recogniser_writes_them(tokenizer):
    pytest.importorskip("unicode_rbnf")
    decoder = ha.task().reader(tokenizer)
    text = "dim the hall light to forty five percent"
    ids, encoding, _ = decoder.encode(text)
    tokens = [tokenizer.id_to_token(i) for i in ids[0]]
    tags = decoder.tags
    wanted = {"hall": "B-name", "light": "I-name", "forty": "B-brightness", "five": "I-brightness"}
    slot_logits = np.stack([np.eye(len(tags))[tags.index(wanted.get(t, "O"))] for t in tokens]) * 10
    intent_logits = np.eye(len(decoder.intents))[decoder.intents.index("HassLightSet")] * 10
    call = decoder.decode(intent_logits, slot_logits, encoding, text)
    assert call.slots == {"name": "hall light", "brightness": 45}


def test_word_level_reading_gives_each_word_one_tag():
    pytest.importorskip("hassil")
    _, tags = ha.label_space()
    index = {n: i for i, n in enumerate(tags)}

    def read(names, words):
        return [tags[t] for t in word_level([index[n] for n in names], words, tags)]

    # "project ##or": the tagger marked only the second piece; the word is the name.
    assert read(["O", "O", "I-name", "O"], [None, 0, 0, None]) == ["O", "I-name", "I-name", "O"]
    assert tag_spans([index[t] for t in read(["O", "O", "I-name", "O"], [-1, 0, 0, -1])], tags) == \
        {(1, 3, "name")}
    # "play ##room": one word cannot hold two slots; its first tagged piece decides.
    assert read(["O", "B-area", "B-name", "O"], [None, 0, 0, None]) == ["O", "B-area", "I-area", "O"]
    # Words keep their own spans.
    assert read(["O", "B-name", "I-name", "B-name", "O"], [None, 0, 0, 1, None]) == \
        ["O", "B-name", "I-name", "B-name", "O"]
