"""The parity helpers: padding and positions as the contract defines them, the comparison
rows, and a greedy divergence reported with transformers' margin at that step."""

from __future__ import annotations

import numpy as np

from edgeagent.causal import parity


def test_left_pad_and_positions_follow_the_contract():
    ids, mask = parity.left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == np.int64
    # cumsum(mask) - 1 clipped at 0, as Hugging Face generate
    assert parity.position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    assert parity.empty_past(2, 3, 4, 8)[5].shape == (2, 4, 0, 8) and len(parity.empty_past(2, 3, 4, 8)) == 6


def test_compare_rows():
    ref = np.asarray([[0.0, 1.0, 2.0]], np.float32)
    ok = parity.compare("prefill", "logits", ref, ref + 1e-5, 1e-3, 1e-3)
    assert ok["ok"] and ok["argmax_agreement"] == 1.0
    bad = parity.compare("prefill", "logits", ref, ref[:, ::-1].copy(), 1e-3, 1e-3)
    assert not bad["ok"] and bad["argmax_agreement"] == 0.0 and bad["max_abs_diff"] == 2.0
    nan = parity.compare("decode", "logits", ref, np.full_like(ref, np.nan), 1e-3, 1e-3)
    assert not nan["ok"] and nan["reason"] == "NaN or Inf"
    shape = parity.compare("decode", "present", ref, ref[:, :2], 1e-3, 1e-3)
    assert not shape["ok"] and "shape" in shape["reason"]


def _toy_step(vocab: int, flip_after: int | None = None):
    """A Step whose next token is (last token + 1) % vocab; it can swap the top two after N calls."""
    calls = {"n": 0}

    def step(ids, mask, pos, past):
        calls["n"] += 1
        logits = np.zeros((*ids.shape, vocab), np.float32)
        for b in range(ids.shape[0]):
            for s in range(ids.shape[1]):
                logits[b, s, (ids[b, s] + 1) % vocab] = 2.0
                logits[b, s, (ids[b, s] + 2) % vocab] = 1.9
                if flip_after is not None and calls["n"] > flip_after:
                    logits[b, s, (ids[b, s] + 2) % vocab] = 2.1
        grown = [np.concatenate([p, np.zeros((ids.shape[0], 1, ids.shape[1], 2), np.float32)], axis=2) for p in past]
        return logits, grown

    return step


def test_greedy_divergence_is_reported_with_the_margin():
    layout = {"num_layers": 1, "num_kv_heads": 1, "head_dim": 2}
    tokens, margins = parity.greedy(_toy_step(10), [3], 4, **layout)
    assert tokens == [4, 5, 6, 7] and np.allclose(margins, 0.1)
    report = parity.check_decoder_parity(_toy_step(10, flip_after=100), _toy_step(10), [[3], [1, 2]],
                                         pad_id=0, decode_steps=2, greedy_tokens=3, **layout)
    assert all(r["ok"] for r in report) and len(report) == 2 + 4 + 2
    # the exported side's top two swap from its 5th call on (prefill 1, decode 2, greedy 3-5):
    # its third greedy token for the first prompt
    report = parity.check_decoder_parity(_toy_step(10, flip_after=4), _toy_step(10), [[3], [1, 2]],
                                         pad_id=0, decode_steps=1, greedy_tokens=3, **layout)
    greedy = [r for r in report if r["check"] == "greedy"]
    assert all(r["ok"] for r in report if r["check"] != "greedy")
    assert not greedy[0]["ok"] and greedy[0]["first_divergence"] == 2
    assert abs(greedy[0]["reference_margin"] - 0.1) < 1e-6 and "margin" in greedy[0]["reason"]
    summary = parity.summarize(report)
    assert summary["greedy_identical"] == "0/2" and summary["failed"] >= 2
