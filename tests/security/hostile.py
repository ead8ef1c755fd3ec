"""Hostile inputs built in code, shared by the security tests and the fuzz targets.

Each builder returns what an adversary would hand edgeagent: a model whose external data is a
hardlink or sits behind a backslash, a graph of 200,000 nodes, an artifact whose manifest lies,
JSON nested 200,000 deep. Nothing is downloaded and nothing leaves `tmp_path`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.arange(16, dtype=np.float32).reshape(4, 4)
DEEP = 200_000


def external_tensor(name: str, location: str, array: np.ndarray = W) -> onnx.TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.append(onnx.StringStringEntryProto(key="location", value=location))
    return tensor


def matmul_model(folder: Path, location: str = "weights.bin", *, write_data: bool = True, opset: int = 17,
                 name: str = "model.onnx") -> Path:
    """y = x · w, w (4×4 float32) stored as external data at `location` (written unless told not to)."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [external_tensor("w", location)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = folder / name
    onnx.save_model(model, str(path))
    if write_data:
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        (folder / location).write_bytes(W.tobytes())
    return path


def function_model(folder: Path, location: str) -> Path:
    """A model whose only external tensor hides in a model-local function's Constant node."""
    folder.mkdir(parents=True, exist_ok=True)
    constant = helper.make_node("Constant", [], ["c"], value=external_tensor("c", location))
    body = helper.make_node("Add", ["x", "c"], ["y"])
    function = helper.make_function("local", "AddConst", ["x"], ["y"], [constant, body],
                                    opset_imports=[helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("AddConst", ["x"], ["y"], domain="local")], "fn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save_model(model, str(path))
    return path


def identity_model(path: Path, *, nodes: int = 1, opset: int = 17) -> Path:
    """x → Identity × `nodes` → y. Large counts repeat one node (invalid SSA, but caps come first)."""
    if nodes == 1:
        graph_nodes = [helper.make_node("Identity", ["x"], ["y"])]
    else:
        graph_nodes = [helper.make_node("Identity", ["x"], ["y"])] * nodes
    graph = helper.make_graph(graph_nodes, "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def hand_artifact(folder: Path, files: dict[str, bytes | Path], *, inputs=None, outputs=None) -> Path:
    """An onnxruntime artifact folder written by edgeagent's own `write_manifest`: `files` are
    written (bytes) or hardlinked (a Path) into it first."""
    from edgeagent.artifact import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            os.link(content, target)
        else:
            target.write_bytes(content)
    spec = {"name": "x", "dtype": "float32", "shape": ["n", 4]}
    write_manifest(folder, backend="onnxruntime", precision="fp32", recipe={"name": "fp32"}, source_sha256=None,
                   signature={"inputs": inputs or [spec], "outputs": outputs or [{**spec, "name": "y"}]},
                   sdk={}, capabilities={"batch_invariant": True, "int8_node_exclusion": True})
    return folder


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def huge_int(digits: int = 5000) -> str:
    return "9" * digits


def rewrite_manifest(folder: Path, change) -> None:
    """Apply `change(manifest_dict)` and write the manifest back (as an adversary editing it would)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    result = change(manifest)
    path.write_text(result if isinstance(result, str) else json.dumps(manifest))


def npz_with_members(path: Path, members: dict[str, bytes | tuple[dict, bytes]],
                     compression: int = 0) -> Path:
    """An .npz written member by member: raw bytes, or (an .npy header dict, the data after it) so
    a header can claim what the data is not."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            if isinstance(content, tuple):
                header, data = content
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                content = buffer.getvalue() + data
            archive.writestr(name, content)
    return path


def zip_bomb_npz(path: Path, *, mebibytes: int = 64) -> Path:
    """`mebibytes` of float32 zeros deflated to about a thousandth of that: a zip bomb in miniature,
    honest in every header."""
    import zipfile

    rows = mebibytes * 1024
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (rows, 256)})
            chunk = bytes(1 << 20)
            for _ in range(mebibytes):
                member.write(chunk)
    return path


# --------------------------------------------------------------------------------------------
# A tiny intent-slots agent folder, built in code (no torch, no training): each word piece's
# embedding votes for an intent and a tag, so what the model answers is known exactly.

INTENTS = ["HassTurnOn", "HassLightSet", "HassTurnOff"]
TAGS = ["O", "B-percentage", "I-percentage", "B-name", "I-name"]
# word piece → (intent it votes for, its tag); [UNK] votes strongly, as trained models do on
# text they never saw; CJK characters are in the vocabulary, as in BERT's.
VOTES = {"[UNK]": ("HassTurnOn", "O"), "turn": ("HassTurnOn", "O"), "on": ("HassTurnOn", "O"),
         "off": ("HassTurnOff", "O"), "the": (None, "O"), "light": ("HassTurnOn", "B-name"),
         "set": ("HassLightSet", "O"), "to": (None, "O"), "31": ("HassLightSet", "B-percentage"),
         "50": ("HassLightSet", "B-percentage"), "##m": (None, "I-percentage"), "[": (None, "O"),
         "%": (None, "O"), "打": ("HassTurnOn", "O"), "开": ("HassTurnOn", "O"), "灯": ("HassTurnOn", "B-name")}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def tiny_tokenizer(path: Path, *, extra_ids: dict[str, int] | None = None) -> Path:
    """A BERT-style WordPiece tokenizer over VOTES' pieces; `extra_ids` adds pieces at chosen ids."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {piece: i for i, piece in enumerate(dict.fromkeys([*SPECIAL, *VOTES]))}
    vocab.update(extra_ids or {})
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer.save(str(path))
    return path


def tiny_intent_model(path: Path, *, dynamic_widths: bool = False) -> Path:
    """input_ids, attention_mask → intent_logits (masked mean of votes), slot_logits (per piece)."""
    pieces = list(dict.fromkeys([*SPECIAL, *VOTES]))
    width = len(INTENTS) + len(TAGS)
    table = np.zeros((len(pieces), width), np.float32)
    for row, piece in enumerate(pieces):
        intent, tag = VOTES.get(piece, (None, "O"))
        if intent:
            table[row, INTENTS.index(intent)] = 24.0
        table[row, len(INTENTS) + TAGS.index(tag)] = 8.0
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["votes"]),
        helper.make_node("Slice", ["votes", "i0", "i1", "axis2"], ["intent_votes"]),
        helper.make_node("Slice", ["votes", "i1", "i2", "axis2"], ["slot_logits"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask_3d"]),
        helper.make_node("Mul", ["intent_votes", "mask_3d"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask_3d", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["intent_logits"]),
    ]
    intents = "intents" if dynamic_widths else len(INTENTS)
    tags = "tags" if dynamic_widths else len(TAGS)
    graph = helper.make_graph(
        nodes, "tiny_intents",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("intent_logits", TensorProto.FLOAT, ["batch", intents]),
         helper.make_tensor_value_info("slot_logits", TensorProto.FLOAT, ["batch", "sequence", tags])],
        [numpy_helper.from_array(table, "table"),
         *(numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
           (("i0", 0), ("i1", len(INTENTS)), ("i2", width), ("axis1", 1), ("axis2", 2)))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def tiny_agent_folder(folder: Path, *, intents: list[str] | None = None, tokenizer: Path | None = None,
                      dynamic_widths: bool = False, exported_intents: list[str] | None = None) -> Path:
    """An agent folder as `edgeagent demo` lays it out: agent.json, tokenizer.json, onnxruntime-fp32/.

    `exported_intents` stamps the model with the task it was "exported" for, as
    `distill.workflow.export_model` does, where agent.json may list `intents` instead."""
    import edgeagent
    from edgeagent.agent.runtime import write_agent_folder
    from edgeagent.tasks.base import TASK_METADATA_KEY
    from edgeagent.tasks.intent_slots import IntentSlotTask

    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_intent_model(folder.parent / f"{folder.name}-model.onnx", dynamic_widths=dynamic_widths)
    if exported_intents is not None:
        proto = onnx.load(str(model))
        exported = IntentSlotTask(exported_intents, TAGS, threshold=0.5).to_json()
        proto.metadata_props.append(onnx.StringStringEntryProto(key=TASK_METADATA_KEY, value=json.dumps(exported)))
        onnx.save_model(proto, str(model))
    edgeagent.compile(model, "onnxruntime", "fp32", out=folder / "onnxruntime-fp32")
    tokenizer = tokenizer or tiny_tokenizer(folder.parent / f"{folder.name}-tokenizer.json")
    task = IntentSlotTask(intents or INTENTS, TAGS, threshold=0.5)
    return write_agent_folder(folder, task, tokenizer=tokenizer)
