"""Logging: library code logs under the `edgeagent` logger; the CLI decides what reaches the terminal.

`configure(verbosity)` (the CLI calls it; applications may too) prints edgeagent's records on
stderr and routes the SDKs' own chatter through the same handler: Python warnings, the records
ONNX Runtime's and NNCF's Python code logs (ONNX Runtime's quantizer logs on the root logger), and
ONNX Runtime's native log severity. At the default verbosity SDK warnings are kept for `-v`, since
most concern choices edgeagent already made (pre-processing, fusions); errors always show.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "edgeagent"
SDK_PACKAGES = ("onnxruntime", "openvino", "nncf", "torch", "transformers", "onnxscript")

log = logging.getLogger(LOGGER)


class _SdkRecords(logging.Filter):
    """Re-levels records that SDKs log (on their own loggers or the root one) so they follow -v/-q."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == LOGGER or record.name.startswith(LOGGER + "."):
            return True
        source = _sdk_of(record)
        if source is None and record.name not in ("root", "py.warnings"):
            return record.levelno >= logging.WARNING
        if record.levelno >= logging.ERROR:
            return True
        # SDK warnings and Python warnings: shown with -v, else kept off the terminal.
        if self.verbosity >= 1:
            record.msg = f"[{source or record.name}] {record.getMessage()}"
            record.args = ()
            return True
        return False


def _sdk_of(record: logging.LogRecord) -> str | None:
    top = record.name.split(".")[0]
    if top in SDK_PACKAGES:
        return top
    path = (record.pathname or "").replace("\\", "/")
    return next((p for p in SDK_PACKAGES if f"/{p}/" in path), None)


def configure(verbosity: int = 0) -> None:
    """Route logging to stderr: -1 quiet (errors), 0 default (edgeagent's info), 1 verbose (SDK
    warnings too), 2 debug."""
    level = {-1: logging.ERROR, 0: logging.INFO, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if verbosity < 2 else "%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_SdkRecords(verbosity))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_edgeagent", False)]:
        root.removeHandler(old)
    handler._edgeagent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    log.setLevel(level)
    for package in SDK_PACKAGES:
        logging.getLogger(package).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.captureWarnings(True)
    set_native_severity(verbosity)


def set_native_severity(verbosity: int) -> None:
    """ONNX Runtime's C++ logger writes to stderr itself: errors only unless verbose."""
    if "onnxruntime" not in sys.modules and verbosity < 1:
        _native_severity[0] = 3
        return
    _native_severity[0] = 3 if verbosity < 1 else (2 if verbosity == 1 else 1)
    apply_native_severity()


_native_severity = [3]


def apply_native_severity() -> None:
    """Called by the onnxruntime backend once it has imported onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return
    onnxruntime.set_default_logger_severity(_native_severity[0])
