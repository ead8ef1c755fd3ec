"""Temperature scaling and expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.errors import InputError
from edgeagent.tasks.calibration import (ece_of_logits, expected_calibration_error, fit_temperature,
                                         negative_log_likelihood)


def _overconfident(n=4000, classes=5, seed=0):
    """Logits whose argmax is right 70 % of the time but whose softmax says about 99 %."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + rng.integers(1, classes, n)) % classes)
    logits = rng.normal(0, 0.3, (n, classes))
    logits[np.arange(n), predicted] += 6.0
    return logits, labels


def test_temperature_scaling_calibrates_an_overconfident_classifier():
    pytest.importorskip("scipy")
    logits, labels = _overconfident()
    before = ece_of_logits(logits, labels)
    temperature = fit_temperature(logits, labels)
    after = ece_of_logits(logits, labels, temperature)
    assert before > 0.2 and temperature > 2 and after < 0.03
    # The fit minimises the NLL, and a temperature never changes the argmax.
    nll = negative_log_likelihood(logits, labels, temperature)
    assert nll < negative_log_likelihood(logits, labels, temperature * 1.3)
    assert nll < negative_log_likelihood(logits, labels, temperature / 1.3)
    # Held-out data from the same model is calibrated by the same temperature.
    held_logits, held_labels = _overconfident(seed=1)
    assert ece_of_logits(held_logits, held_labels, temperature) < 0.03


def test_ece_is_zero_when_confidence_is_accuracy_and_measures_the_gap():
    confidence = np.repeat([0.25, 0.75], 400)
    correct = np.concatenate([np.arange(400) < 100, np.arange(400) < 300]).astype(float)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.full(10, 0.9), np.zeros(10)) == pytest.approx(0.9)
    with pytest.raises(InputError):
        expected_calibration_error([0.5], [1, 0])


def test_bad_inputs_are_refused():
    with pytest.raises(InputError):
        ece_of_logits(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(InputError, match="labels outside"):
        ece_of_logits(np.zeros((2, 2)), np.array([0, 5]))
