"""Calibrated confidence: temperature scaling (Guo et al., 2017) and expected calibration error.

A classifier's softmax is often over-confident: wrong answers at 0.99. One scalar T, fitted on
held-out data by minimising the negative log-likelihood of softmax(logits / T), leaves every
argmax as it was and makes the winner's probability mean what it says. ECE measures how far it
does not: the weighted mean gap between accuracy and confidence over equal-width bins (15, as in
Guo et al.).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

ECE_BINS = 15


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise InputError(f"calibration needs logits [N, classes] and N labels, got {logits.shape} and "
                         f"{labels.shape}", field="logits")
    if labels.min() < 0 or labels.max() >= logits.shape[1] or not np.isfinite(logits).all():
        raise InputError("labels outside the classes or non-finite logits", field="labels")
    return logits, labels.astype(np.int64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    probs = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising the NLL of `labels` under softmax(logits / T) (bounded 1-D search).

    Raises:
        InputError: mismatched or empty inputs; scipy missing (`pip install 'edgeagent[stats]'`).
    """
    logits, labels = _check(logits, labels)
    try:
        from scipy.optimize import minimize_scalar
    except ImportError:
        raise InputError("fitting a temperature needs scipy: pip install 'edgeagent[stats]'", field="scipy") from None
    # Search log T: the NLL is smooth and unimodal there for any ordinary classifier.
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over `bins` equal-width confidence bins: Σ (n_b / N) |accuracy_b − confidence_b|."""
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(confidence) != len(correct) or not len(confidence):
        raise InputError("ECE needs as many correctness flags as confidences, at least one", field="confidence")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def ece_of_logits(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bins: int = ECE_BINS) -> float:
    """ECE of the winner's probability under softmax(logits / temperature)."""
    logits, labels = _check(logits, labels)
    probs = softmax(logits, temperature)
    return expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == labels, bins)
