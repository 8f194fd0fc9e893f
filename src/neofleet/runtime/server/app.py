"""The Starlette app: Open Inference Protocol v2 routes and /metrics, a few lines each.

    GET  /v2/health/live                       200 {"live": true}
    GET  /v2/health/ready                      200 once loaded and warmed up, else 503
    GET  /v2                                   server metadata
    GET  /v2/models/{name}[/versions/{v}]      model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    GET  /metrics                              Prometheus text format

Every failure is answered ``{"error": "<message>"}`` with the status ``status.classify``
gives; decoding and encoding are ``protocol``'s pure functions, running the model is the
``InferenceService``'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from neofleet.runtime.errors import ModelNotFoundError, PayloadTooLargeError, ProtocolError
from neofleet.runtime.server import protocol
from neofleet.runtime.server.metrics import CONTENT_TYPE, ServerMetrics
from neofleet.runtime.server.service import InferenceService
from neofleet.runtime.server.signature import Signature
from neofleet.runtime.server.status import OK, classify

log = logging.getLogger(__name__)

JSON = "application/json"
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about its one model."""

    name: str
    version: str
    platform: str
    signature: Signature


def create_app(info: ModelInfo, service: InferenceService, metrics: ServerMetrics, *,
               server_version: str, max_body_bytes: int) -> Starlette:
    routes = _Routes(info, service, metrics, server_version, max_body_bytes)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    return Starlette(
        routes=[
            Route("/v2/health/live", routes.live, methods=["GET"]),
            Route("/v2/health/ready", routes.ready, methods=["GET"]),
            Route("/v2", routes.server_metadata, methods=["GET"]),
            Route(model, routes.model_metadata, methods=["GET"]),
            Route(versioned, routes.model_metadata, methods=["GET"]),
            Route(f"{model}/ready", routes.model_ready, methods=["GET"]),
            Route(f"{versioned}/ready", routes.model_ready, methods=["GET"]),
            Route(f"{model}/infer", routes.infer, methods=["POST"]),
            Route(f"{versioned}/infer", routes.infer, methods=["POST"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )


class _Routes:
    def __init__(self, info: ModelInfo, service: InferenceService, metrics: ServerMetrics,
                 server_version: str, max_body_bytes: int) -> None:
        self._info, self._service, self._metrics = info, service, metrics
        self._max_body = max_body_bytes
        self._server_doc = orjson.dumps(protocol.server_metadata(server_version))
        self._model_doc = orjson.dumps(protocol.model_metadata(
            info.name, info.version, info.platform, info.signature))

    async def live(self, request: Request) -> Response:
        return _json(b'{"live":true}')

    async def ready(self, request: Request) -> Response:
        ready = self._service.ready
        return _json(orjson.dumps({"ready": ready}), 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return _json(self._server_doc)

    async def model_metadata(self, request: Request) -> Response:
        try:
            self._check_model(request.path_params)
        except ModelNotFoundError as exc:
            return _error(classify(exc).http_status, str(exc))
        return _json(self._model_doc)

    async def model_ready(self, request: Request) -> Response:
        try:
            self._check_model(request.path_params)
        except ModelNotFoundError as exc:
            return _error(classify(exc).http_status, str(exc))
        ready = self._service.ready
        return _json(orjson.dumps({"name": self._info.name, "ready": ready}), 200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            self._check_model(request.path_params)
            with self._service.admitted():
                body = await read_body(request, self._max_body)
                decoded = protocol.decode_request(
                    body, request.headers.get(protocol.HEADER_LENGTH), self._info.signature)
                outputs = await self._service.run(decoded.inputs, decoded.rows)
                content, header_length = protocol.encode_response(
                    self._info.name, self._info.version, decoded.id, outputs, decoded.outputs)
        except Exception as exc:
            return self._failed(exc, started)
        self._metrics.answered(OK, time.perf_counter() - started)
        if header_length is None:
            return _json(content)
        return Response(content, media_type=BINARY,
                        headers={protocol.HEADER_LENGTH: str(header_length)})

    def _check_model(self, params: Mapping[str, str]) -> None:
        name, version = params["name"], params.get("version")
        if name != self._info.name:
            raise ModelNotFoundError(f"model {name[:100]!r} is not served here; this server "
                                     f"serves {self._info.name!r}")
        if version is not None and version != self._info.version:
            raise ModelNotFoundError(f"model {name!r} has no version {version[:100]!r}; it has "
                                     f"{self._info.version!r}")

    def _failed(self, exc: Exception, started: float) -> Response:
        outcome = classify(exc)
        if outcome.http_status >= 500 and outcome.http_status != 503:
            log.error("infer failed", exc_info=exc)
        self._metrics.answered(outcome.status, time.perf_counter() - started, outcome.reason)
        headers = {"retry-after": "1"} if outcome.http_status == 503 else None
        return _error(outcome.http_status, outcome.message, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused once it is over ``limit``: by Content-Length before reading, and
    while reading (chunked bodies)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError("Content-Length must be a byte count")
        if int(declared) > limit:
            raise PayloadTooLargeError(f"the body of {int(declared)} bytes is over the limit of "
                                       f"{limit} bytes (--max-body-bytes)")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes "
                                           "(--max-body-bytes)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ProtocolError("the client went away before the body was complete") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json(content: bytes, status_code: int = 200) -> Response:
    return Response(content, status_code=status_code, media_type=JSON)


def _error(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(protocol.error_body(message), status_code=status_code, headers=headers,
                    media_type=JSON)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods, in the OIP error shape."""
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path[:200]}",
                  exc.headers)
