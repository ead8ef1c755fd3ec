"""An agent with a tool of your own: utterance → ToolCall → your function.

    python examples/agent_custom_tool.py                      # a toy agent built here in a second
    python examples/agent_custom_tool.py --artifacts ~/.cache/edgeagent/agent "turn on the kitchen light"

The toy agent is a three-class text classifier (lights, music, weather): a word-level tokenizer
and a bag-of-words ONNX graph, compiled for onnxruntime into an agent folder. With --artifacts it
opens any agent folder instead, such as the Home Assistant router `edgeagent demo` builds. Needs
`pip install "edgeagent[cpu,agent]"`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

LABELS = ["lights", "music", "weather"]
EVIDENCE = {"lights": 0, "lamp": 0, "dark": 0, "music": 1, "song": 1, "play": 1, "rain": 2, "sunny": 2,
            "weather": 2}


def toy_agent_folder(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    import edgeagent
    from edgeagent.agent.runtime import write_agent_folder
    from edgeagent.tasks.sequence_classification import SequenceClassificationTask

    words = ["[PAD]", "[UNK]", *sorted(EVIDENCE)]
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    evidence = np.zeros((len(words), len(LABELS)), np.float32)
    for word, cls in EVIDENCE.items():
        evidence[words.index(word), cls] = 4.0
    evidence[words.index("[UNK]")] = 0.5  # unknown words: a little evidence for everything
    graph = helper.make_graph(
        [helper.make_node("Gather", ["evidence", "input_ids"], ["per_token"]),
         helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
         helper.make_node("Mul", ["per_token", "mask3"], ["masked"]),
         helper.make_node("ReduceSum", ["masked", "axis"], ["logits"], keepdims=0)], "toy",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [numpy_helper.from_array(evidence, "evidence"), numpy_helper.from_array(np.array([2]), "last"),
         numpy_helper.from_array(np.array([1]), "axis")])
    model = folder / "toy.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    agent = folder / "agent"
    edgeagent.compile(model, "onnxruntime", "fp32", out=agent / "onnxruntime-fp32")
    return write_agent_folder(agent, SequenceClassificationTask(LABELS, threshold=0.6),
                              tokenizer=folder / "tokenizer.json")


def main() -> None:
    from edgeagent.agent.runtime import EdgeAgent

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, help="an agent folder (default: build the toy one)")
    parser.add_argument("text", nargs="*", default=["it is far too dark in here", "play a song", "will it rain",
                                                    "book me a flight"])
    args = parser.parse_args()
    folder = args.artifacts or toy_agent_folder(Path(tempfile.mkdtemp(prefix="edgeagent-example-")))
    agent = EdgeAgent.load(folder)
    switched = []

    @agent.tool("lights")                 # the Home Assistant router's tools are intents: "HassTurnOn", ...
    def lights(call):
        switched.append(call.text)
        return f"lights toggled ({len(switched)} so far)"

    @agent.tool("HassTurnOn")
    def turn_on(call):
        return f"turning on {call.slots}"

    for text in args.text:
        call, result = agent.handle(text)
        print(f"{text!r} → {call.intent} {call.slots} ({call.confidence:.2f}) → {result}")
    agent.close()


if __name__ == "__main__":
    main()
