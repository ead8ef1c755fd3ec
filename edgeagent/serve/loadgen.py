"""A bounded closed-loop load generator for `edgeagent serve` (aiohttp, HTTP/1.1 keep-alive).

`concurrency` clients each send their next request when the previous one is answered, until
`requests` have been sent: the same shape as `hey -n 5000 -c 16`. Every answer's status and
latency are kept, so a run reports 5xx counts and tail latency rather than only an average.
aiohttp rather than httpx: on two shared cores the client's own cost is part of what is
measured, and aiohttp's client costs about a quarter of httpx's per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    wall_s: float
    statuses: dict[int, int]
    latencies_ms: list[float] = field(repr=False)
    errors: dict[str, int] = field(default_factory=dict)  # transport errors by type, e.g. refused

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"requests": self.requests, "concurrency": self.concurrency, "wall_s": round(self.wall_s, 3),
                "requests_per_s": round(self.requests_per_s, 1),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "server_errors": self.server_errors, "transport_errors": dict(self.errors),
                "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                               "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}}


async def _load(url: str, texts: list[str], requests: int, concurrency: int, timeout_s: float) -> LoadResult:
    import aiohttp

    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    next_index = 0

    async def client_loop(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < requests:
            text = texts[next_index % len(texts)]
            next_index += 1
            start = time.perf_counter()
            try:
                async with session.post(url, json={"text": text}) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - start) * 1e3)
            statuses[status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return LoadResult(requests, concurrency, wall, dict(statuses), latencies, dict(errors))


def run_load(url: str, texts: list[str], *, requests: int = 5000, concurrency: int = 16,
             timeout_s: float = 30.0) -> LoadResult:
    """POST {"text": t} to `url` (…/v1/act) `requests` times from `concurrency` clients."""
    if not texts:
        raise ValueError("run_load needs at least one text")
    return asyncio.run(_load(url, list(texts), requests, concurrency, timeout_s))
