"""Progress of long steps: a bar on a terminal, one log line per step elsewhere (CI logs, pipes)."""

from __future__ import annotations

import sys
import time
from typing import Any

from .log import log


class Steps:
    """Counts finished steps of a long job; `done(what)` after each.

    On a terminal it is a tqdm bar; where stderr is not a terminal (a CI log), each step is one
    INFO line: `<title>: 3/8 <what> (12 s)`.
    """

    def __init__(self, total: int | None, title: str, *, unit: str = "step", enabled: bool = True) -> None:
        self.total, self.title, self.count = total, title, 0
        self.started = self._last = time.perf_counter()
        self._bar = None
        self.enabled = enabled
        if enabled and _terminal():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=title, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def describe(self, what: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(what, refresh=True)

    def done(self, what: str = "", **fields: Any) -> None:
        self.count += 1
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.update(1)
        elif self.enabled:
            extra = "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in fields.items())
            of = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s %s (%.0f s%s)", self.title, self.count, of, what, now - self._last, extra)
        self._last = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
