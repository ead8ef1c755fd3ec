"""Transfer-set augmentation: embedding neighbours, and ha-intents sentences that never leak held-out names."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edgeagent.distill.augment import NeighbourWords
from edgeagent.errors import InputError

VOCAB = {"[UNK]": 0, "lamp": 1, "bulb": 2, "light": 3, "##s": 4, "kitchen": 5, "zebra": 6, "a": 7, "Lamp": 8}
EMBEDDINGS = np.array([
    [0.0, 0.0, 1.0],    # [UNK]
    [1.0, 0.0, 0.0],    # lamp
    [0.95, 0.1, 0.0],   # bulb: the closest to lamp
    [0.8, 0.3, 0.0],    # light
    [1.0, 0.01, 0.0],   # ##s: closer still, but a word piece
    [0.99, 0.05, 0.0],  # kitchen: close, but a place word
    [0.0, 1.0, 0.0],    # zebra: far from everything
    [1.0, 0.0, 0.0],    # a: one letter
    [1.0, 0.0, 0.0],    # Lamp: not lower-case
])


def test_neighbours_are_whole_words_by_cosine_similarity_without_excluded_ones():
    words = NeighbourWords(EMBEDDINGS, VOCAB, k=2, exclude={"kitchen"})
    assert words.neighbours("lamp") == ("bulb", "light")
    assert "kitchen" in NeighbourWords(EMBEDDINGS, VOCAB, k=2).neighbours("lamp")
    assert words.neighbours("sofa") == ()  # not in the vocabulary
    assert "lamp" not in words.neighbours("lamp")
    by_rule = NeighbourWords(EMBEDDINGS, VOCAB, k=2, exclude=lambda word: word.startswith("kitch"))
    assert by_rule.neighbours("lamp") == ("bulb", "light")


def test_vary_swaps_words_with_probability_p_and_is_reproducible():
    words = NeighbourWords(EMBEDDINGS, VOCAB, k=2, exclude={"kitchen"})
    assert words.vary("desk lamp", random.Random(0), p=0.0) == "desk lamp"
    varied = words.vary("desk lamp", random.Random(0), p=1.0)
    assert varied.split()[0] == "desk" and varied.split()[1] in ("bulb", "light")
    runs = [[words.vary("lamp lamp lamp", rng, p=0.5) for _ in range(20)]
            for rng in (random.Random(3), random.Random(3))]
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def test_bad_tables_are_refused():
    with pytest.raises(InputError, match="rows"):
        NeighbourWords(EMBEDDINGS[:4], VOCAB)
    with pytest.raises(InputError, match="k must"):
        NeighbourWords(EMBEDDINGS, VOCAB, k=0)
    with pytest.raises(InputError, match="below the vocabulary"):
        NeighbourWords(EMBEDDINGS, VOCAB, k=len(EMBEDDINGS))
    with pytest.raises(InputError, match="hidden"):
        NeighbourWords(EMBEDDINGS[0], VOCAB)


class TestHaIntentsTransferSet:
    ha = pytest.importorskip("edgeagent.workloads.ha_intents")
    pytest.importorskip("hassil")
    pytest.importorskip("home_assistant_intents")
    from edgeagent.workloads import ha_names

    def test_variants_never_use_held_out_names_or_sentences(self):
        ha, ha_names = self.ha, self.ha_names
        held = sorted(ha.held_out_values())
        # An adversarial `vary`: half the time it proposes a dev or test value outright.
        def vary(text, rng):
            return rng.choice(held) if rng.random() < 0.5 else f"{text} two"
        sentences = ha.transfer_set(20, vary)
        assert sentences
        names = [value for e in sentences for _, _, slot, value in e.spans if slot == "name"]
        # Timer names are not varied, and a few training timer names are another list's test
        # values ("broccoli"): the training split shows those too. No other held-out value appears.
        trained = {v.lower() for values in ha_names.SPLIT_LISTS.values() for v in ha.split_values(values, "train")}
        assert names and not any(name.lower() in set(held) - trained for name in names)
        assert sum(name.endswith(" two") for name in names) > len(names) / 2  # varied, not originals
        held_sentences = {e.text.lower() for split in ("dev", "test") for e in ha.generate(split)}
        assert not any(e.text.lower() in held_sentences for e in sentences)
        for example in sentences:
            for start, end, slot, value in example.spans:
                if slot == "name":
                    assert example.text[start:end] == value
        assert [e.to_json() for e in ha.transfer_set(20, vary)] == [e.to_json() for e in sentences]

    def test_place_words_cover_their_inflections_but_not_device_words(self):
        ha = self.ha
        assert {"kitchen", "gardens", "northern", "den", "offices"} == {
            w for w in ("kitchen", "gardens", "northern", "den", "offices", "dentist", "lamp", "speaker", "tv")
            if ha.is_place_word(w)}

    def test_bad_arguments_are_refused(self):
        with pytest.raises(InputError, match="per_intent"):
            self.ha.transfer_set(0, lambda text, rng: text)
        with pytest.raises(InputError, match="cannot vary"):
            self.ha.transfer_set(5, lambda text, rng: text, lists=("colour",))
