"""Text → ToolCall with no torch or transformers: `tokenizers`, any backend's Session, numpy.

An agent folder holds `agent.json` (the task that reads the model's outputs, and the sha256 of
every file beside the artifacts), the tokenizer, and one artifact folder per backend and
precision (as `edgeagent demo` writes them). `EdgeAgent` knows no task's internals: the task's
reader turns text into feeds and outputs into a `ToolCall`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import safeio
from ..artifact import MAX_MANIFEST_BYTES, Artifact, atomic_write_text, open_artifact
from ..errors import ArtifactError, InputError
from ..ir import sha256_file
from ..tasks import NOT_UNDERSTOOD, Task, ToolCall, task_from_json
from ..tasks.base import TASK_METADATA_KEY, same_labels
from ..tasks.text import load_tokenizer

AGENT_FILE = "agent.json"
AGENT_SCHEMA = "edgeagent.agent/1"
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"  # the file onnxruntime (and tensorrt) artifacts keep their graph in

__all__ = ["AGENT_FILE", "NOT_UNDERSTOOD", "TOKENIZER_FILE", "EdgeAgent", "ToolCall", "choose_artifact",
           "read_agent_folder", "write_agent_folder"]


def write_agent_folder(folder: str | os.PathLike, task: Task, *, tokenizer: str | os.PathLike,
                       extra: Mapping[str, Any] | None = None) -> Path:
    """Copy the tokenizer into `folder` and write `agent.json` with the task and the files' hashes.

    The artifacts go into subfolders of `folder` (one per backend and precision), built by
    `edgeagent.compile`; they carry their own manifests.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer, folder / TOKENIZER_FILE)
    record = {"schema": AGENT_SCHEMA, "task": task.to_json(), "tokenizer": TOKENIZER_FILE,
              "files": {TOKENIZER_FILE: sha256_file(folder / TOKENIZER_FILE)}, **dict(extra or {})}
    atomic_write_text(folder / AGENT_FILE, json.dumps(record, indent=1, default=str) + "\n")
    return folder


def read_agent_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], Task]:
    """`agent.json` of an agent folder, checked, with its task rebuilt.

    Raises:
        InputError: not an agent folder.
        ArtifactError: a record that is a symlink, too large, not JSON (or nests too deep, or holds
            huge numbers) or malformed; a listed file missing, a symlink, not a regular file or
            modified; a task it cannot rebuild.
    """
    folder = Path(folder)
    path = folder / AGENT_FILE
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{folder} is not an agent folder (it needs {AGENT_FILE}, {TOKENIZER_FILE} and "
                         "artifacts); build one with `edgeagent demo`", field="artifacts")
    record = safeio.read_json(path, what="agent record", max_bytes=MAX_MANIFEST_BYTES, follow_symlinks=False,
                              error=lambda reason: ArtifactError(f"{path} {reason}; rebuild the agent folder"))
    if not isinstance(record, dict) or record.get("schema") != AGENT_SCHEMA:
        found = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise ArtifactError(f"{path} has schema {found!r:.80}, this edgeagent reads {AGENT_SCHEMA!r}; rebuild the "
                            "agent folder with this version (`edgeagent demo`)")
    files = record.get("files")
    if not isinstance(files, dict) or not isinstance(record.get("tokenizer"), str) or record["tokenizer"] not in files:
        raise ArtifactError(f"{path} lists no hash for its tokenizer; rebuild the agent folder")
    for name, expected in files.items():
        if "\x00" in name or "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ArtifactError(f"agent folder {folder}: {name!r} is not a plain file name; rebuild the agent folder")
        candidate = folder / name
        if not candidate.exists() and not candidate.is_symlink():
            raise ArtifactError(f"agent folder {folder}: {name} is missing; copy the whole folder again")
        with safeio.open_regular(candidate, what="agent file", follow_symlinks=False,
                                 error=lambda reason, name=name: ArtifactError(
                                     f"agent folder {folder}: {name} {reason}")) as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise ArtifactError(f"agent folder {folder}: {name} was modified since the folder was built; "
                                "copy the folder again or rebuild it")
    try:
        task = task_from_json(record.get("task"))
    except InputError as exc:
        raise ArtifactError(f"{path}: its task cannot be rebuilt: {exc}") from None
    return record, task


def choose_artifact(found: Sequence[Artifact], *, backend: str | None = None, precision: str | None = None,
                    target: Any = None) -> Artifact:
    """The artifact to run: the requested backend and precision, else the target's preference order
    (backends in its order, precisions in each preset's order) among those usable here.

    Raises:
        InputError: an unknown backend, or no usable artifact (the present ones are listed).
    """
    from ..backend import backend_entries
    from ..targets import get_target

    entries = backend_entries()
    if backend is not None and backend not in entries:
        raise InputError(f"unknown backend {backend!r}; registered backends: {sorted(entries)}", field="backend")
    usable = [a for a in found if (backend is None or a.backend == backend)
              and (precision is None or a.precision == precision)
              and entries.get(a.backend) is not None and entries[a.backend].backend is not None
              and entries[a.backend].backend.available()]
    if not usable:
        present = [f"{a.backend}/{a.precision}" for a in found]
        raise InputError(f"no usable artifact for backend={backend or 'any'}, precision={precision or 'any'}; "
                         f"present: {present}", field="backend")
    presets = get_target(target).backends
    order = {p.name: i for i, p in reversed(list(enumerate(presets)))}

    def rank(artifact: Artifact) -> tuple[int, int, str]:
        preset = next((p for p in presets if p.name == artifact.backend), None)
        precisions = list(preset.precisions) if preset else []
        return (order.get(artifact.backend, len(order)),
                precisions.index(artifact.precision) if artifact.precision in precisions else len(precisions),
                artifact.path.name)

    return min(usable, key=rank)


def _calibrated(task: Task, record: Mapping[str, Any], artifact: str, folder: Path) -> Task:
    """The task with the artifact's own temperature and threshold, where the folder was calibrated
    (`agent.calibrate`): each artifact's logits are its own."""
    calibration = (record.get("calibration") or {}).get(artifact)
    if not calibration:
        return task
    values = {k: calibration.get(k) for k in ("temperature", "threshold")}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in values.values()):
        raise ArtifactError(f"agent folder {folder}: calibration of {artifact} holds {values}; rebuild the folder")
    try:
        return task_from_json({**task.to_json(), **values})
    except InputError as exc:
        raise ArtifactError(f"agent folder {folder}: calibration of {artifact} is refused: {exc}") from None


def load_tokenizer_file(path: Path):
    """A `tokenizers.Tokenizer` from an agent folder's tokenizer.json, without padding or truncation.

    Raises:
        InputError: `tokenizers` is missing.
        ArtifactError: the file is not a regular file, too large, or not a tokenizer.
    """
    tokenizer = load_tokenizer(path, error=lambda reason: ArtifactError(f"{path} {reason}; rebuild the agent folder"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def check_exported_task(artifact: Artifact, task: Task, where: str) -> None:
    """Where the artifact keeps an ONNX model that carries the task it was exported for, agent.json's
    task must list the same labels: a reversed or foreign label list gives confident wrong tool calls.

    Raises:
        ArtifactError: the two disagree, or the model's task metadata is unreadable.
    """
    if ONNX_FILE not in artifact.manifest["files"]:
        return  # e.g. OpenVINO IR: nothing carries the task; the output widths were checked
    raw = artifact.load_model(ONNX_FILE).metadata.get(TASK_METADATA_KEY)
    if raw is None:
        return  # a model exported without it (by hand, or before edgeagent recorded it)
    if not raw.lstrip().startswith("{"):  # a decoder IR names its task only ("text-generation")
        if raw != task.name:
            raise ArtifactError(f"{where}: the model was exported for task {raw!r:.60}, agent.json says "
                                f"{task.name!r}; rebuild the agent folder")
        return
    exported = safeio.loads_json(raw, what="the model's task metadata",
                                 error=lambda reason: ArtifactError(f"{where}: the model's task metadata {reason}"))
    if not isinstance(exported, dict) or not same_labels(exported, task.to_json()):
        raise ArtifactError(f"{where}: agent.json's task lists other labels than the model was exported with "
                            "(reordered, or another model's); rebuild the agent folder")


class ToolHandlers:
    """Tools registered per intent and run on an agent's answers (EdgeAgent's and Cascade's)."""

    tools: dict[str, Any]

    def tool(self, intent: str):
        """Decorator: register `fn(call) -> result` as the handler of `intent`."""
        def register(fn):
            self.tools[intent] = fn
            return fn
        return register

    def handle(self, text: str, context: Mapping[str, str] | None = None) -> tuple[ToolCall, Any]:
        """act(), then run the intent's tool; (call, None) when nothing handles it."""
        call = self.act(text, context)
        handler = self.tools.get(call.intent) if call.understood else None
        return call, (handler(call) if handler else None)


class EdgeAgent(ToolHandlers):
    """Utterance → ToolCall → tool, on any backend, with no torch at run time.

    Tools register per intent (tool name):

        agent = EdgeAgent.load("~/.cache/edgeagent/agent")
        @agent.tool("HassTurnOn")
        def turn_on(call): ...
        agent.handle("turn on the kitchen light")
    """

    def __init__(self, session, reader, *, artifact: Artifact | None = None, task: Task | None = None,
                 home: Any = None) -> None:
        self.session, self.reader, self.artifact, self.task, self.home = session, reader, artifact, task, home
        self.tools: dict[str, Any] = {}

    @classmethod
    def load(cls, artifacts: str | os.PathLike, *, backend: str | None = None, precision: str | None = None,
             threshold: float | None = None, options: Any = None, target: Any = None,
             device: str | None = None, home: Any = None) -> EdgeAgent:
        """Open the best matching artifact in an agent folder.

        Args:
            artifacts: the agent folder.
            backend: which backend's artifact (default: the host target's preference order among
                the artifacts usable here).
            precision: which precision (default: the preset's order among those present).
            threshold: confidence below which the answer is `not_understood` (default: the task's).
            options: the backend's load options, e.g. {"threads": "auto"} for onnxruntime.
            target: the target whose backend preference and threads apply (default: this host).
            device: cpu, gpu, gpu.1, … for the chosen artifact's backend (default: where it was built for).
            home: a home file (or `homefile.Home`) whose floors, areas and entities slot values are
                resolved to (default None: slots stay as said).

        Raises:
            InputError: no such folder, no artifact matching the request (the present ones are listed).
            ArtifactError: a modified file, labels that do not fit the model's outputs, or a tokenizer
                whose ids the model cannot take (the reader's `check` runs the model once on them, so
                a folder that would fail every request fails here instead).
        """
        from ..pipeline import load_session

        folder = Path(artifacts).expanduser()
        from .cascade import CASCADE_FILE, Cascade

        if (folder / CASCADE_FILE).exists() and not (folder / AGENT_FILE).exists():
            return Cascade.load(folder, backend=backend, precision=precision, options=options, target=target,
                                device=device, home=home)
        record, task = read_agent_folder(folder)
        found = [open_artifact(p) for p in sorted(folder.iterdir()) if (p / "manifest.json").is_file()]
        artifact = choose_artifact(found, backend=backend, precision=precision, target=target)
        where = f"agent folder {folder}, artifact {artifact.path.name}"
        task = _calibrated(task, record, artifact.path.name, folder)
        task.check_outputs(artifact.outputs, where)
        check_exported_task(artifact, task, where)
        if getattr(task, "name", None) == "text-generation":
            from ..generate.assets import DecoderAssets

            reader = task.reader(DecoderAssets.from_folder(artifact.path))  # the artifact carries its tokenizer
        else:
            reader = task.reader(load_tokenizer_file(folder / record["tokenizer"]), threshold=threshold)
        if device is not None:
            from ..backend import get_backend

            chosen = get_backend(artifact.backend)
            _, on_device = chosen.split_options(chosen.device_options(device))
            if options is not None and not isinstance(options, Mapping):
                raise InputError("pass device= with options as a mapping, or put the device in the options "
                                 "dataclass itself", field="device")
            options = {**on_device, **dict(options or {})}
        if home is not None:
            from .homefile import Home

            home = home if isinstance(home, Home) else Home.load(home)
        session = load_session(artifact, options=options, target=target)
        check = getattr(reader, "check", None)
        if check is not None:
            try:
                check(session)
            except ArtifactError as exc:
                session.close()
                raise ArtifactError(f"{where}: {exc}") from None
        return cls(session, reader, artifact=artifact, task=task, home=home)

    @staticmethod
    def cascade(router: EdgeAgent, generator: EdgeAgent, *, threshold: float | None = None,
                examples: Sequence[Any] | None = None, latency_budget_ms: float | None = None):
        """The router answers when its confidence reaches `threshold`, else the generative agent does.

        Args:
            router: an open router agent (a router folder's).
            generator: an open generative agent (a generative folder's).
            threshold: the router confidence at or above which it answers; None: chosen on
                `examples` for the best exact match whose predicted p50 stays within
                `latency_budget_ms` (`agent.cascade`).
            examples: held-out utterances (with .text, .intent, .slots) to choose the threshold on.
            latency_budget_ms: the p50 the chosen threshold must keep (default: none).

        Returns:
            an `agent.cascade.Cascade`, with the EdgeAgent API; each ToolCall's `answered_by`
            says which model answered.
        """
        from .cascade import cascade

        return cascade(router, generator, threshold=threshold, examples=examples,
                       latency_budget_ms=latency_budget_ms)

    def check_context(self, context: Mapping[str, str] | None) -> dict[str, str]:
        """The context checked (keys, types) and, with a home, its area and floor as the home names them.

        Raises:
            InputError: a malformed context, or an area or floor the home does not have.
        """
        from ..tasks.base import check_context

        checked = check_context(context)
        return self.home.check_context(checked) if self.home is not None and checked else checked

    def _finish(self, call: ToolCall, context: Mapping[str, str]) -> ToolCall:
        apply = getattr(self.task, "apply_context", None)
        if context and apply is not None:
            apply(call, context)
        if self.home is not None:
            self.home.resolve(call, context)
        return call

    def act(self, text: str, context: Mapping[str, str] | None = None) -> ToolCall:
        """Understand one utterance; never raises for bad text (empty text is not understood).

        Args:
            text: the utterance.
            context: as Home Assistant passes it, e.g. {"area": "kitchen"}: the satellite's area fills
                the area an utterance leaves out or calls "here" (default None).

        Raises:
            InputError: a malformed context, or an area or floor the agent's home does not have.
        """
        context = self.check_context(context)
        return self._finish(self.reader.act(self.session, text), context)

    @property
    def batch_invariant(self) -> bool:
        """Whether an utterance's answer is the same alone and in a batch: the task must mask its
        padding and the backend's recipe must not depend on batch mates (the artifact says which;
        dynamic INT8, which scales activations from the whole batch tensor, does)."""
        task_ok = self.task is None or self.task.batch_invariant
        return task_ok and (self.artifact is None or self.artifact.batch_invariant)

    def act_batch(self, texts: Sequence[str], contexts: Sequence[Mapping[str, str] | None] | None = None
                  ) -> list[ToolCall]:
        """act() for many utterances: one padded model call where that gives the same answers
        as one by one (see `batch_invariant`), else one call each. `contexts`, if given, holds one
        context (or None) per text."""
        texts = list(texts)
        contexts = list(contexts) if contexts is not None else [None] * len(texts)
        if len(contexts) != len(texts):
            raise InputError(f"{len(contexts)} contexts for {len(texts)} texts", field="contexts")
        checked = [self.check_context(c) for c in contexts]
        calls = self.reader.act_batch(self.session, texts) if self.batch_invariant else \
            [self.reader.act(self.session, text) for text in texts]
        return [self._finish(call, context) for call, context in zip(calls, checked)]

    def close(self) -> None:
        self.session.close()
