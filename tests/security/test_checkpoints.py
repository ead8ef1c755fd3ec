"""Teacher folders and checkpoints (issue 19, defects 11 and 12): a hostile config.json, safetensors
header, pickled trainer state or tokenizer is an InputError, refused before anything is allocated or
unpickled."""

from __future__ import annotations

import json
import pickle
import struct
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from edgeagent.cli.main import main  # noqa: E402
from edgeagent.distill.persist import FORMAT, load_joint  # noqa: E402
from edgeagent.errors import InputError  # noqa: E402
from tests.security import hostile  # noqa: E402

ENCODER = {"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2}


def _teacher(folder, *, encoder=None, config_text=None, weights=b"\x00" * 64):
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "encoder": encoder or ENCODER, "num_intents": 3, "num_tags": 5, "token_map": False}
    (folder / "config.json").write_text(config_text if config_text is not None else json.dumps(config))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_200_byte_config_declaring_a_huge_vocabulary_is_refused_before_allocating(tmp_path, capsys):
    """Defect 12: 50 million tokens × 8,192 made distillation try to allocate 1.6 TB."""
    folder = _teacher(tmp_path / "t", encoder={**ENCODER, "vocab_size": 50_000_000, "hidden_size": 8192,
                                               "num_attention_heads": 64})
    assert (folder / "config.json").stat().st_size < 300
    start = time.perf_counter()
    with pytest.raises(InputError, match="vocab_size must be an integer from 1 to 1000000"):
        load_joint(folder)
    assert time.perf_counter() - start < 2
    assert main(["distill", "--workload", "ha-intents", "--teacher", str(folder), "--out", str(tmp_path / "s")]) == 1
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("change, match", [
    ({"config_text": hostile.deep_json()}, "nests"),
    ({"config_text": '{"format": ' + hostile.huge_int() + "}"}, "number"),
    ({"config_text": "[]"}, "format"),
    ({"encoder": {**ENCODER, "hidden_size": "wide"}}, "hidden_size"),
    ({"encoder": {**ENCODER, "num_attention_heads": 3}}, "multiple"),
    ({"encoder": {**ENCODER, "architectures": 5}}, "architectures"),
    ({"encoder": [1, 2]}, "object"),
    ({"encoder": {**ENCODER, "vocab_size": 900_000, "hidden_size": 8192, "num_attention_heads": 64}},
     "over the cap"),  # each size within its cap, together 7 billion parameters
    ({"encoder": {**ENCODER, "vocab_size": 30_522, "hidden_size": 384}}, "weights file"),  # 64 bytes of weights
])
def test_hostile_teacher_configs_are_input_errors(tmp_path, change, match):
    with pytest.raises(InputError, match=match):
        load_joint(_teacher(tmp_path / "t", **change))


@pytest.mark.parametrize("weights", [
    struct.pack("<Q", 10**15) + b"{}",  # a header length far past the file
    struct.pack("<Q", 20) + b'{"w": {"dtype": 5}}  ',  # a header that is not what it claims
    b"\x80\x04\x95 a pickle, not safetensors",
])
def test_lying_safetensors_headers_are_input_errors(tmp_path, weights):
    """Defect 11: refused safely, but as internal errors."""
    small = {**ENCODER, "vocab_size": 2, "hidden_size": 2, "num_attention_heads": 1, "intermediate_size": 2,
             "max_position_embeddings": 2}
    with pytest.raises(InputError, match="safetensors"):
        load_joint(_teacher(tmp_path / "t", encoder=small, weights=weights))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickled_trainer_state_is_refused_and_never_run(tmp_path):
    """Defect 11: a pickled checkpoint was refused by torch's weights_only load, but as an internal error."""
    from safetensors.torch import save_file

    from edgeagent.distill.trainer import _load_checkpoint

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "last.safetensors"))
    marker = tmp_path / "ran"
    (folder / "trainer_state.pt").write_bytes(pickle.dumps({"state": _Payload(marker)}))
    with pytest.raises(InputError, match="cannot be read safely"):
        _load_checkpoint(folder, model, None, optimizer, scheduler, torch.Generator(), torch)
    assert not marker.exists()
    (folder / "trainer_state.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(InputError, match="cannot be read safely"):
        _load_checkpoint(folder, model, None, optimizer, scheduler, torch.Generator(), torch)


def test_a_hugging_face_base_folder_is_checked_before_transformers_allocates(tmp_path):
    from edgeagent.distill.models import load_encoder

    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", **ENCODER, "vocab_size": 50_000_000,
                                                    "hidden_size": 8192, "num_attention_heads": 64}))
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="vocab_size"):
        load_encoder(folder)


def test_a_hostile_tokenizer_file_is_an_input_error(tmp_path):
    from edgeagent.workloads.ha_intents import load_tokenizer

    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": 5}}')
    with pytest.raises(InputError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "deep.json").write_text(hostile.deep_json(10_000))
    with pytest.raises(InputError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "deep.json")
