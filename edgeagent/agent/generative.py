"""Generative agent folders: a decoder IR compiled for the backends, plus agent.json with the
text-generation task (the tools, the system prompt, the token budget).

    folder/agent.json                 task text-generation, the tokenizer's hash
    folder/tokenizer.json
    folder/onnxruntime-int4/          artifacts (each carries its tokenizer and chat template)
    folder/openvino-int8/ ...

`EdgeAgent.load(folder)` opens it as it opens a router folder; `act(text)` writes one
grammar-constrained tool call.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError

DEFAULT_BUILDS = (("onnxruntime", "int4"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"),
                  ("openvino", "int4"), ("openvino", "int8"), ("openvino", "fp32"))


def build_generative_agent(ir: str | os.PathLike, folder: str | os.PathLike, *,
                           builds: Sequence[tuple[str, str]] = DEFAULT_BUILDS, task: Any = None,
                           workload: str = "ha-intents", options: dict[str, dict[str, Any]] | None = None,
                           target: Any = None, skip_unavailable: bool = True) -> Path:
    """Compile a decoder IR folder into a generative agent folder.

    Args:
        ir: the decoder IR folder (`export_causal_lm`).
        folder: the agent folder to write (its artifacts are rebuilt; other files are replaced).
        builds: (backend, precision) pairs (default: ONNX Runtime and OpenVINO, int4/int8/fp32).
        task: a TextGenerationTask (default: the workload's tools).
        options: compile options per backend, e.g. {"onnxruntime": {"block_size": 32}}, or per
            build, keyed as its folder is named ({"onnxruntime-int4": {"embeddings": "int4"}}),
            which takes precedence over the backend's.
        skip_unavailable: leave out builds whose backend is missing here (default True).

    Raises:
        InputError: no build could be made; the IR folder is not a decoder's.
        As `edgeagent.compile` for a build that fails.
    """
    from ..backend import get_backend
    from ..causal.export import open_decoder_ir
    from ..pipeline import compile as compile_model
    from .runtime import write_agent_folder

    decoder = open_decoder_ir(ir)
    if task is None:
        if workload != "ha-intents":
            raise InputError(f"workload {workload!r} declares no tools; pass task=TextGenerationTask(...)",
                             field="workload")
        from ..workloads.ha_tools import generative_task

        task = generative_task()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    built = []
    for backend, precision in builds:
        if skip_unavailable and not get_backend(backend).available():
            continue
        out = folder / f"{backend}-{precision}"
        if out.exists():
            shutil.rmtree(out)
        chosen = (options or {}).get(f"{backend}-{precision}", (options or {}).get(backend))
        compile_model(decoder.model, backend, precision, target=target, out=out, options=chosen)
        built.append(f"{backend}-{precision}")
    if not built:
        raise InputError(f"none of the builds {list(builds)} could be made here", field="builds")
    write_agent_folder(folder, task, tokenizer=decoder.path / "tokenizer.json",
                       extra={"decoder_ir": {"source": decoder.metadata.get("source"),
                                             "sha256": decoder.model.sha256}, "artifacts": built})
    return folder
