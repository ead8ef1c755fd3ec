"""A Session that keeps its own cache (`decoder_cache`) is driven by the same loop.

`BoundSession` is ONNX Runtime with IO binding: each step binds the previous step's present
OrtValues as the next past and lets ONNX Runtime allocate the outputs, the pattern a GPU
execution provider uses to keep the cache on the device. The loop must give the same tokens
through it as through the default `KVCache`, for greedy, batches, beams and grammars.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.backends.onnxruntime import OnnxRuntimeSession
from edgeagent.generate import Decoder, generate
from edgeagent.generate.decoder import step_inputs

CHAT = [{"role": "user", "content": "set a timer for 5 minutes"}]


class BoundCache:
    """The cache as OrtValues, bound back each step; `select` goes through numpy (beams)."""

    def __init__(self, session: OnnxRuntimeSession, layout, batch: int) -> None:
        import onnxruntime as ort

        self._ort = ort
        self._session = session.ort_session
        self._past = [f"past_key_values.{i}.{k}" for i in range(layout.num_layers) for k in ("key", "value")]
        self._present = [f"present.{i}.{k}" for i in range(layout.num_layers) for k in ("key", "value")]
        empty = np.zeros((batch, layout.num_kv_heads, 0, layout.head_dim), np.float32)
        self.past = [ort.OrtValue.ortvalue_from_numpy(empty) for _ in self._past]
        self.attention_mask = np.zeros((batch, 0), np.int64)
        self.next_position = np.zeros(batch, np.int64)
        self.steps = 0

    def step(self, tokens, valid=None):
        tokens, mask, positions, advance = step_inputs(self.attention_mask, self.next_position, tokens, valid)
        binding = self._session.io_binding()
        for name, value in (("input_ids", tokens), ("attention_mask", mask), ("position_ids", positions)):
            binding.bind_cpu_input(name, value)
        for name, value in zip(self._past, self.past):
            binding.bind_ortvalue_input(name, value)
        for name in ("logits", *self._present):
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self.past = list(outputs[1:])
        self.attention_mask, self.next_position = mask, self.next_position + advance
        self.steps += 1
        return outputs[0].numpy()

    def select(self, rows):
        rows = np.asarray(rows, np.int64)
        self.past = [self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(p.numpy()[rows]))
                     for p in self.past]
        self.attention_mask, self.next_position = self.attention_mask[rows], self.next_position[rows]


class BoundSession(OnnxRuntimeSession):
    def __init__(self, model_path, decoder: Decoder) -> None:
        super().__init__(model_path, decoder.session.inputs, decoder.session.outputs, threads=1)
        self._layout = decoder.layout
        self.caches = 0

    def decoder_cache(self, batch: int) -> BoundCache:
        self.caches += 1
        return BoundCache(self, self._layout, batch)


@pytest.fixture(scope="module")
def bound(llama, llama_ir):
    session = BoundSession(llama_ir / "model.onnx", llama)
    yield Decoder(session, llama.assets)
    session.close()


def test_greedy_batch_and_beams_through_a_session_owned_cache(llama, bound):
    prompts = ["turn on the kitchen lights", CHAT, "what time is it"]
    for prompt in prompts:
        assert generate(bound, prompt, max_new_tokens=12).token_ids == generate(llama, prompt, max_new_tokens=12).token_ids
    assert ([r.token_ids for r in generate(bound, prompts, max_new_tokens=12)]
            == [r.token_ids for r in generate(llama, prompts, max_new_tokens=12)])
    assert (generate(bound, CHAT, max_new_tokens=8, num_beams=3).token_ids
            == generate(llama, CHAT, max_new_tokens=8, num_beams=3).token_ids)
    assert bound.session.caches >= 5


def test_constrained_calls_through_a_session_owned_cache(llama, bound):
    from tests.generate.test_tools import ASK, TOOLS

    for seed in range(5):
        a = generate(bound, ASK, max_new_tokens=96, temperature=1.0, seed=seed, grammar=TOOLS)
        b = generate(llama, ASK, max_new_tokens=96, temperature=1.0, seed=seed, grammar=TOOLS)
        assert a.token_ids == b.token_ids and a.timings.steps_saved == b.timings.steps_saved > 0
        assert TOOLS.parse(a.text)[0] is not None
