"""Generation settings: every out-of-range value is an InputError naming it; the token choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeagent.errors import InputError
from edgeagent.generate import GenerationOptions
from edgeagent.generate.options import choose


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"top_p": 0.0}, "top_p", "(0, 1]"),
    ({"top_p": 1.5}, "top_p", "(0, 1]"),
    ({"top_p": -0.2}, "top_p", "(0, 1]"),
    ({"top_p": math.nan}, "top_p", "(0, 1]"),
    ({"temperature": -0.5}, "temperature", "≥ 0"),
    ({"temperature": math.nan}, "temperature", "≥ 0"),
    ({"temperature": math.inf}, "temperature", "finite"),
    ({"stop": ""}, "stop", "empty string"),
    ({"stop": ["ok", ""]}, "stop", "empty string"),
    ({"stop": [1]}, "stop", "strings"),
    ({"num_beams": 0}, "num_beams", "≥ 1"),
    ({"num_beams": -2}, "num_beams", "≥ 1"),
    ({"max_new_tokens": 0}, "max_new_tokens", "≥ 1"),
    ({"max_new_tokens": 2.5}, "max_new_tokens", "≥ 1"),
    ({"top_k": 0}, "top_k", "≥ 1"),
    ({"seed": -1}, "seed", "≥ 0"),
    ({"num_beams": 2, "temperature": 0.7}, "num_beams", "temperature=0"),
    ({"length_penalty": math.inf}, "length_penalty", "finite"),
])
def test_bad_settings_name_the_parameter_and_range(kwargs, field, words):
    settings = {"max_new_tokens": 8, **kwargs}
    with pytest.raises(InputError) as caught:
        GenerationOptions(**settings)
    assert caught.value.field == field
    assert field in str(caught.value) and words in str(caught.value)


def test_good_settings_normalise_stop():
    options = GenerationOptions(max_new_tokens=4, stop="\n", top_p=1.0, top_k=1, temperature=0.0)
    assert options.stop == ("\n",)
    assert GenerationOptions(max_new_tokens=4, stop=["a", "b", "a"]).stop == ("a", "b")
    assert GenerationOptions(max_new_tokens=4, stop=None).stop == ()


LOGITS = np.log(np.array([0.05, 0.5, 0.15, 0.3], np.float32))


def draws(options, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    return np.bincount([choose(LOGITS, options, rng) for _ in range(n)], minlength=4) / n


def test_greedy_is_argmax_and_does_not_draw():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert choose(LOGITS, GenerationOptions(max_new_tokens=1), rng) == 1
    assert rng.bit_generator.state == state


def test_sampling_follows_softmax():
    freq = draws(GenerationOptions(max_new_tokens=1, temperature=1.0))
    np.testing.assert_allclose(freq, [0.05, 0.5, 0.15, 0.3], atol=0.015)


def test_temperature_sharpens():
    freq = draws(GenerationOptions(max_new_tokens=1, temperature=0.5), n=5000)
    expected = np.array([0.05, 0.5, 0.15, 0.3]) ** 2
    np.testing.assert_allclose(freq, expected / expected.sum(), atol=0.03)


def test_top_k_keeps_the_k_most_likely():
    assert set(np.flatnonzero(draws(GenerationOptions(max_new_tokens=1, temperature=1.0, top_k=2),
                                    n=3000))) == {1, 3}
    assert set(np.flatnonzero(draws(GenerationOptions(max_new_tokens=1, temperature=3.0, top_k=1),
                                    n=500))) == {1}


def test_top_p_keeps_the_nucleus_as_hugging_face():
    # Ascending [0.05, 0.15, 0.3, 0.5] has cumulative [0.05, 0.2, 0.5, 1.0]: with top_p=0.7 the
    # tail with mass ≤ 0.3 goes (tokens 0 and 2), and 0.3/0.5 renormalise.
    freq = draws(GenerationOptions(max_new_tokens=1, temperature=1.0, top_p=0.7), n=8000)
    assert freq[0] == 0 and freq[2] == 0
    np.testing.assert_allclose(freq[[1, 3]], [0.5 / 0.8, 0.3 / 0.8], atol=0.02)
    tiny = draws(GenerationOptions(max_new_tokens=1, temperature=1.0, top_p=0.01), n=300)
    assert set(np.flatnonzero(tiny)) == {1}


def test_masked_tokens_are_never_drawn():
    logits = LOGITS.copy()
    logits[[1, 3]] = -np.inf
    rng = np.random.default_rng(3)
    picks = {choose(logits, GenerationOptions(max_new_tokens=1, temperature=2.0, top_p=0.9), rng)
             for _ in range(500)}
    assert picks <= {0, 2} and picks


def test_same_seed_same_draws():
    options = GenerationOptions(max_new_tokens=1, temperature=1.0)
    runs = [[choose(LOGITS, options, rng) for _ in range(50)]
            for rng in (np.random.default_rng(7), np.random.default_rng(7), np.random.default_rng(8))]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
