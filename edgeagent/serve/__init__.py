"""`edgeagent serve`: the agent as a local HTTP JSON service (Starlette on uvicorn).

    POST /v1/act          {"text": "...", "context": {"area": "kitchen"}}   → the ToolCall as JSON
    POST /v1/act/batch    {"texts": [...], "contexts": [...]} or [...]     → {"results": [ToolCall, ...]}

`context` is the caller's situation as Home Assistant passes it (`area`, `floor`): an utterance
that names no area ("turn on the lights") is resolved to the caller's; `contexts` gives one per
text (or null), `context` one for every text of a batch.
    GET  /healthz                                       → {"status": "ok", ...}
    GET  /metrics                                       → Prometheus text format

Every error is a JSON body `{"error": {"code": ..., "message": ...}}` with a 4xx status for bad
requests (400 invalid JSON or numbers too long to read, 404, 405, 408 a body not sent within
`body_timeout_s`, 413 too large, 422 wrong fields or text that is not valid Unicode), 503 with
Retry-After when the queue is full or the server is shutting down, and 504 when a request
outlives its timeout. Each utterance is checked before it joins a micro-batch, and an utterance
the model fails on is retried alone, so one client's input never fails another's request; a 500
is answered like any other response and keeps the connection usable. A client that disconnects
mid-body is counted apart (`edgeagent_client_disconnects_total`, status "disconnected") and
logged in one line. On SIGTERM uvicorn stops accepting, lets requests in flight finish, and then
the queue drains before the model is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .. import safeio
from ..errors import InputError

log = logging.getLogger("edgeagent.serve")
HEALTH_PROBE = "turn on the light"


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the service.

    Attributes:
        max_body_bytes: largest request body (default 64 KiB); more gets 413.
        max_batch_items: most utterances in one /v1/act/batch request (default 256).
        max_queue: most utterances waiting or running at once (default 1024); more gets 503.
        max_model_batch: most utterances per model call when the queue forms batches (default 16).
        request_timeout_s: longest a request waits for its answer (default 10 s); then 504.
        retry_after_s: the Retry-After a 503 carries (default 1 s).
        graceful_timeout_s: how long SIGTERM waits for requests in flight (default 30 s).
        body_timeout_s: longest a client may take to send a request body (default 10 s); then 408
            and the connection is closed, so slow senders cannot hold connections open.
        max_connections: most connections served at once (default 256); a request on one more
            gets 503 from uvicorn (its `limit_concurrency`).
        keep_alive_timeout_s: how long an idle keep-alive connection stays open (default 5 s).
    """

    max_body_bytes: int = 64 * 1024
    max_batch_items: int = 256
    max_queue: int = 1024
    max_model_batch: int = 16
    request_timeout_s: float = 10.0
    retry_after_s: int = 1
    graceful_timeout_s: int = 30
    body_timeout_s: float = 10.0
    max_connections: int = 256
    keep_alive_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_body_bytes", "max_batch_items", "max_model_batch", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer of at least 1, got {value!r}", field=name)
        for name in ("request_timeout_s", "body_timeout_s", "keep_alive_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InputError(f"{name} must be a positive number of seconds, got {value!r}", field=name)
        if self.max_batch_items > self.max_queue:
            raise InputError(f"max_batch_items ({self.max_batch_items}) cannot exceed max_queue "
                             f"({self.max_queue}): such a batch could never be admitted",
                             field="max_batch_items")


def create_app(agent: Any, config: ServeConfig | None = None):
    """The ASGI app serving `agent` (anything with act_batch(texts) -> [ToolCall])."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from .batcher import FAILING_AFTER, Batcher, QueueFull
    from .metrics import ROUTES, ServeMetrics

    config = config or ServeConfig()
    metrics = ServeMetrics()
    batcher = Batcher(agent, max_queue=config.max_queue, max_batch=config.max_model_batch,
                      on_batch=metrics.observe_batch)
    artifact = getattr(agent, "artifact", None)
    model = {"backend": getattr(artifact, "backend", None), "precision": getattr(artifact, "precision", None),
             "recipe": (artifact.recipe.get("name") if artifact is not None else None),
             "sha256": (artifact.manifest.get("source", {}).get("sha256") if artifact is not None else None)}
    metrics.model_info.labels(*(str(model[k]) for k in ("backend", "precision", "recipe", "sha256"))).set(1)
    state = {"draining": False}

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)

    async def read_json(request: Request) -> Any:
        # Starlette's own max_body_size answers in plain text; the API promises JSON errors.
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and len(declared) < 20 and int(declared) > config.max_body_bytes:
            raise _BadRequest(413, "body_too_large", f"the body is {declared} bytes; the limit is "
                              f"{config.max_body_bytes}", close=True)
        chunks, size = [], 0
        try:
            # One deadline for the whole body: a client sending a byte every second must not hold a
            # connection (and a slot of max_connections) for as long as it likes.
            async with asyncio.timeout(config.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_body_bytes:
                        raise _BadRequest(413, "body_too_large", f"the body is larger than {config.max_body_bytes} "
                                          "bytes", close=True)
                    chunks.append(chunk)
        except TimeoutError:
            metrics.rejected.labels("body_timeout").inc()
            raise _BadRequest(408, "body_timeout", f"the body did not arrive within {config.body_timeout_s} s",
                              close=True) from None
        # Size, nesting and number-length caps: a 5,000-digit integer is a 400, not Python's ValueError.
        return safeio.loads_json(b"".join(chunks), what="the body",
                                 error=lambda reason: _BadRequest(400, "invalid_json", f"the body {reason}"))

    def check_text(text: Any, where: str) -> str:
        """One utterance, checked before it joins a micro-batch with other clients' utterances."""
        if not isinstance(text, str):
            raise _BadRequest(422, "invalid_text", f"{where} must be a string, got {type(text).__name__}")
        at = safeio.first_surrogate(text)
        if at is not None:
            raise _BadRequest(422, "invalid_text", f"{where} is not valid Unicode: a lone surrogate at character "
                              f"{at}; send UTF-8 text")
        return text

    def check_context(context: Any, where: str) -> Any:
        """A caller's context, checked by the agent before it joins a micro-batch (None: none)."""
        if context is None:
            return None
        checker = getattr(agent, "check_context", None)
        if checker is None:
            raise _BadRequest(422, "invalid_context", f"{where}: this agent takes no context")
        try:
            return checker(context) or None
        except InputError as exc:
            raise _BadRequest(422, "invalid_context", f"{where}: {exc}") from None

    async def answer(texts: list[str], contexts: list[Any] | None = None) -> list[dict[str, Any]]:
        if state["draining"]:
            raise _BadRequest(503, "shutting_down", "the server is shutting down; retry on another instance")
        try:
            futures = batcher.submit(texts, contexts)
        except QueueFull as exc:
            metrics.rejected.labels("queue_full").inc()
            raise _BadRequest(503, "queue_full", f"{exc}; retry later") from None
        metrics.queue_depth.set(batcher.depth)
        try:
            waiter = futures[0] if len(futures) == 1 else asyncio.gather(*futures)
            calls = await asyncio.wait_for(waiter, config.request_timeout_s)
            calls = [calls] if len(futures) == 1 else calls
        except TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise _BadRequest(504, "timeout", f"no answer within {config.request_timeout_s} s") from None
        finally:
            metrics.queue_depth.set(batcher.depth)
        return [call.to_json() for call in calls]

    def guarded(endpoint):
        """Answer every failure of an endpoint as a response: an exception that escaped to uvicorn
        after Starlette's 500 would make it close the connection under a keep-alive client."""
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except (_BadRequest, HTTPException):
                raise  # their handlers answer them
            except ClientDisconnect:
                request.scope["edgeagent.disconnected"] = True
                metrics.disconnects.inc()
                log.info("client disconnected while sending the body of %s %s", request.method, request.url.path)
                return Response(status_code=499)  # never sent: the client is gone
            except Exception as exc:  # a bug, or the model failing on one utterance: that request's 500
                log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                return error(500, "internal_error", f"{type(exc).__name__}: {exc}")
        return run

    @guarded
    async def act(request: Request) -> Response:
        payload = await read_json(request)
        if not isinstance(payload, dict) or "text" not in payload:
            raise _BadRequest(422, "missing_text", 'the body must be a JSON object with a "text" string, '
                              'e.g. {"text": "..."}')
        text = check_text(payload["text"], '"text"')
        context = check_context(payload.get("context"), '"context"')
        return JSONResponse((await answer([text], [context]))[0])

    @guarded
    async def act_batch(request: Request) -> Response:
        payload = await read_json(request)
        texts = payload.get("texts") if isinstance(payload, dict) else payload
        if not isinstance(texts, list):
            raise _BadRequest(422, "missing_texts", 'the body must be a JSON list of strings or an object '
                              '{"texts": [...]}')
        texts = [check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        if len(texts) > config.max_batch_items:
            raise _BadRequest(413, "too_many_texts", f"{len(texts)} texts in one request; the limit is "
                              f"{config.max_batch_items}: split the batch")
        contexts = _batch_contexts(payload, len(texts))
        contexts = [check_context(c, f"contexts[{i}]") for i, c in enumerate(contexts)]
        return JSONResponse({"results": await answer(texts, contexts) if texts else []})

    @guarded
    async def healthz(request: Request) -> Response:
        # Failing: the model failed the last few utterances and then a plain probe utterance too; a
        # server that answers 500 to every request must not tell its load balancer it is fine. The
        # probe keeps a run of one client's failing utterances from marking a working server failing.
        failing = batcher.consecutive_failures >= FAILING_AFTER
        if failing and not state["draining"]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(batcher.submit([HEALTH_PROBE])[0], config.request_timeout_s)
            failing = batcher.consecutive_failures >= FAILING_AFTER
        status = "draining" if state["draining"] else "failing" if failing else "ok"
        body = {"status": status, "model": model,
                "queue_depth": batcher.depth, "max_model_batch": batcher.max_batch,
                "batch_invariant": bool(getattr(agent, "batch_invariant", False)),
                "uptime_s": round(time.time() - metrics.started, 3)}
        if failing:
            body["last_error"] = batcher.last_error
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @guarded
    async def metrics_endpoint(request: Request) -> Response:
        metrics.queue_depth.set(batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = {404: f"no route {request.url.path}; routes: {sorted(ROUTES)}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, codes.get(exc.status_code, "http_error"), message, dict(exc.headers or {}))

    async def bad_request(request: Request, exc: _BadRequest) -> Response:
        headers = {"Retry-After": str(config.retry_after_s)} if exc.status == 503 else {}
        if exc.close:  # the rest of the body was never read: the connection cannot carry another request
            headers["Connection"] = "close"
        return error(exc.status, exc.code, exc.message, headers or None)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            state["draining"] = True
            await batcher.stop()  # the agent stays open: whoever made it closes it

    app = Starlette(
        routes=[Route("/v1/act", act, methods=["POST"]), Route("/v1/act/batch", act_batch, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])],
        exception_handlers={HTTPException: http_error, _BadRequest: bad_request},
        lifespan=lifespan)
    return _RequestMetrics(app, metrics)


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close = status, code, message, close


class _RequestMetrics:
    """ASGI wrapper: counts every response by status and times it, errors from any layer included."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if scope.get("edgeagent.disconnected"):
                status = "disconnected"
            self.metrics.observe_request(scope["path"], scope["method"], status, time.perf_counter() - start)


def _batch_contexts(payload: Any, count: int) -> list[Any]:
    """`contexts` (one per text, null for none) or `context` (one for all) of a batch request."""
    if not isinstance(payload, dict):
        return [None] * count
    if "contexts" in payload and "context" in payload:
        raise _BadRequest(422, "invalid_context", 'give "contexts" (one per text) or "context" (one for all), '
                          "not both")
    if "contexts" in payload:
        contexts = payload["contexts"]
        if not isinstance(contexts, list) or len(contexts) != count:
            raise _BadRequest(422, "invalid_context", f'"contexts" must be a list of {count} objects (or nulls), '
                              "one per text")
        return contexts
    return [payload.get("context")] * count


def uvicorn_config(agent: Any, *, host: str = "127.0.0.1", port: int = 8080, config: ServeConfig | None = None,
                   log_level: str = "info", access_log: bool = False):
    """The uvicorn.Config `run` serves with: the app, and the connection limits of `config`."""
    import importlib.util

    import uvicorn

    config = config or ServeConfig()
    return uvicorn.Config(
        create_app(agent, config), host=host, port=port, lifespan="on", log_level=log_level,
        access_log=access_log, timeout_graceful_shutdown=config.graceful_timeout_s,
        # uvicorn answers 503 once its open connections reach limit_concurrency, the new one included.
        limit_concurrency=config.max_connections + 1, timeout_keep_alive=config.keep_alive_timeout_s,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11")


def run(agent: Any, *, host: str = "127.0.0.1", port: int = 8080, config: ServeConfig | None = None,
        log_level: str = "info", access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn with uvloop and httptools where installed)."""
    import uvicorn

    server_config = uvicorn_config(agent, host=host, port=port, config=config, log_level=log_level,
                                   access_log=access_log)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler that
    # was there before it; this one turns that into a normal return, so `edgeagent serve` exits 0
    # after a clean stop and the agent is closed.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        uvicorn.Server(server_config).run()
    except _Stopped:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        close = getattr(agent, "close", None)
        if close is not None:
            close()


class _Stopped(Exception):
    """SIGTERM arrived after uvicorn's graceful shutdown had finished."""


def _raise_stopped(signum, frame) -> None:
    raise _Stopped


__all__ = ["ServeConfig", "create_app", "run", "uvicorn_config"]
