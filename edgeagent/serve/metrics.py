"""Prometheus metrics of a serving agent, in a registry of its own (one per app)."""

from __future__ import annotations

import collections
import time

# The agent answers in fractions of a millisecond; the default buckets start at 5 ms.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# Known paths only, so that a scan of random URLs cannot grow the label set without bound.
ROUTES = frozenset({"/v1/act", "/v1/act/batch", "/healthz", "/metrics"})


class ServeMetrics:
    """Request counts by status, latencies, confidence, the not-understood rate, resident memory."""

    def __init__(self, *, window: int = 1000) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter("edgeagent_http_requests", "HTTP requests by path, method and status",
                                ["path", "method", "status"], registry=r)
        self.request_latency = Histogram("edgeagent_http_request_duration_seconds",
                                         "Time from request to response, by path", ["path"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.model_latency = Histogram("edgeagent_model_latency_seconds",
                                       "Time of one model call (tokenize, infer, decode) per batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgeagent_model_batch_size", "Utterances per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.confidence = Histogram("edgeagent_answer_confidence",
                                    "Confidence of each answer, as the model's task reports it",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.utterances = Counter("edgeagent_utterances", "Utterances answered, by outcome",
                                  ["outcome"], registry=r)
        self.not_understood_ratio = Gauge(
            "edgeagent_not_understood_ratio",
            f"Share of not-understood answers among the last {window} utterances", registry=r)
        self.truncated = Counter("edgeagent_truncated_utterances",
                                 "Utterances cut to the model's length", registry=r)
        self.queue_depth = Gauge("edgeagent_queue_depth", "Utterances waiting or running", registry=r)
        self.rejected = Counter("edgeagent_rejected_requests",
                                "Requests refused before the model, by reason", ["reason"], registry=r)
        self.disconnects = Counter("edgeagent_client_disconnects",
                                   "Clients that disconnected before their request was read", registry=r)
        self.model_info = Gauge("edgeagent_model_info", "The artifact being served",
                                ["backend", "precision", "recipe", "sha256"], registry=r)
        self._recent: collections.deque[bool] = collections.deque(maxlen=window)
        self._recent_not_understood = 0  # kept with the deque, so the ratio costs no sum per batch
        self.started = time.time()

    def observe_batch(self, calls, seconds: float) -> None:
        """Called on the event loop after each model call (one at a time: no lock needed)."""
        self.model_latency.observe(seconds)
        self.batch_size.observe(len(calls))
        for call in calls:
            missed = not call.understood
            if len(self._recent) == self._recent.maxlen:
                self._recent_not_understood -= self._recent[0]  # about to fall out of the window
            self._recent.append(missed)
            self._recent_not_understood += missed
            self.utterances.labels("not_understood" if missed else "understood").inc()
            self.confidence.observe(call.confidence)
            if call.truncated:
                self.truncated.inc()
        self.not_understood_ratio.set(self._recent_not_understood / len(self._recent))

    def observe_request(self, path: str, method: str, status: int | str, seconds: float) -> None:
        path = path if path in ROUTES else "other"
        self.requests.labels(path, method if method in ("GET", "POST") else "other", str(status)).inc()
        self.request_latency.labels(path).observe(seconds)
