"""The wire: WSGI apps that serve a service's REST-JSON routes the way AWS answers them.

Each answer carries ``x-amzn-RequestId``; each error carries ``x-amzn-ErrorType`` and the status
of its code, so botocore raises the modelled exception class and retries exactly what it would
retry against AWS. Faults from ``misbehaviour`` are applied here, before an operation runs, so
the services themselves stay deterministic.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from emulator.errors import ServiceError
from emulator.misbehaviour import FaultInjector

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator"
KEEP_ALIVE_IDLE_SECONDS = 120.0


@dataclass(frozen=True)
class Call:
    """One request as an operation sees it: the JSON body, path parameters, query and raw body."""

    operation: str
    body: Mapping[str, Any]
    path_params: Mapping[str, str]
    query: Mapping[str, list[str]]
    raw_body: bytes
    headers: Mapping[str, str]


Dispatch = Callable[[Call], Mapping[str, Any] | bytes]


@dataclass(frozen=True)
class RouteSpec:
    """``method`` + ``path`` (``{name}`` placeholders; ``{name+}`` may contain slashes)."""

    method: str
    path: str
    operation: str
    json_body: bool = True


class CallStats:
    """Counts of calls and of error answers per operation, for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._errors: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def record(self, operation: str, error_code: str | None) -> None:
        """Count one call of ``operation``, and its error code if it failed."""
        with self._lock:
            self._calls[operation] += 1
            if error_code is not None:
                self._errors[operation][error_code] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"calls": {op: n}, "errors": {op: {code: n}}}`` as counted so far."""
        with self._lock:
            return {
                "calls": dict(self._calls),
                "errors": {op: dict(codes) for op, codes in self._errors.items()},
            }

    def reset(self) -> None:
        """Start counting afresh."""
        with self._lock:
            self._calls.clear()
            self._errors.clear()


def _werkzeug_rule(path: str) -> str:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("+}"):
            out.append(f"<path:{part[1:-2]}>")
        elif part.startswith("{") and part.endswith("}"):
            out.append(f"<{part[1:-1]}>")
        else:
            out.append(part)
    return "/".join(out)


class ServiceApp:
    """A WSGI app for one service: routes, faults, call statistics and a control API.

    The control API under ``/_emulator`` is the stand-in's own: ``GET health``, ``GET stats``,
    ``POST stats/reset`` and ``POST faults`` (handled by ``on_control``).
    """

    def __init__(
        self,
        name: str,
        routes: Iterable[RouteSpec],
        dispatch: Dispatch,
        faults: FaultInjector,
        make_error: Callable[..., ServiceError],
        on_control: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self.name = name
        self._max_body_bytes = max_body_bytes
        self.stats = CallStats()
        self.faults = faults
        self._dispatch = dispatch
        self._make_error = make_error
        self._on_control = on_control
        self._specs = {spec.operation: spec for spec in routes}
        self._map = Map(
            [
                Rule(_werkzeug_rule(spec.path), methods=[spec.method], endpoint=spec.operation)
                for spec in self._specs.values()
            ],
            strict_slashes=False,
            merge_slashes=False,
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        response = self._respond(request)
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        try:
            operation, path_params = self._map.bind_to_environ(request.environ).match()
        except (NotFound, MethodNotAllowed):
            # Not an operation of this service: AWS answers such requests with this code.
            error = ServiceError(
                "UnknownOperationException",
                404,
                f"Unknown operation {request.method} {request.path}",
            )
            return _error_response(error, request_id)
        except HTTPException as exc:  # pragma: no cover - werkzeug redirects are disabled
            return Response(str(exc), status=exc.code or 500)
        try:
            self.faults.before_call(operation)
            call = self._call(operation, request, path_params)
            result = self._dispatch(call)
        except ServiceError as error:
            self.stats.record(operation, error.code)
            if error.status >= 500:
                log.info("%s %s answered %s", self.name, operation, error.code)
            return _error_response(error, request_id)
        except Exception:
            log.exception("%s %s failed inside the stand-in", self.name, operation)
            self.stats.record(operation, "InternalServerException")
            error = self._make_error("InternalServerException", "Internal server error")
            return _error_response(error, request_id)
        self.stats.record(operation, None)
        payload = result if isinstance(result, bytes) else json.dumps(result).encode()
        return Response(
            payload,
            status=200,
            headers={"x-amzn-RequestId": request_id, "Content-Type": "application/json"},
        )

    def _call(self, operation: str, request: Request, path_params: Mapping[str, str]) -> Call:
        limit = self._max_body_bytes
        if limit is not None and (request.content_length or 0) > limit:
            raise self._make_error(
                "ValidationException",
                f"Request payload of {request.content_length} bytes exceeds the {limit} byte limit",
            )
        raw = request.get_data(cache=False)
        body: Mapping[str, Any] = {}
        if self._specs[operation].json_body and raw:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                raise self._make_error(
                    "ValidationException", f"Request body is not valid JSON: {exc}"
                ) from None
            if not isinstance(parsed, dict):
                raise self._make_error("ValidationException", "Request body must be a JSON object")
            body = parsed
        return Call(
            operation=operation,
            body=body,
            path_params=dict(path_params),
            query={key: request.args.getlist(key) for key in request.args},
            raw_body=raw,
            headers={key.lower(): value for key, value in request.headers.items()},
        )

    def _control(self, request: Request) -> Response:
        action = request.path[len(CONTROL_PREFIX) :].strip("/")
        if action == "health" and request.method == "GET":
            return _json_response({"service": self.name, "status": "ok"})
        if action == "stats" and request.method == "GET":
            return _json_response(self.stats.snapshot())
        if action == "stats/reset" and request.method == "POST":
            self.stats.reset()
            return _json_response({})
        if self._on_control is not None and request.method == "POST":
            try:
                document = json.loads(request.get_data() or b"{}")
                return _json_response(dict(self._on_control(action, document)))
            except (ValueError, TypeError) as exc:
                return _json_response({"message": str(exc)}, status=400)
        return _json_response({"message": f"unknown control action {action!r}"}, status=404)


def _json_response(document: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, content_type="application/json")


def _error_response(error: ServiceError, request_id: str) -> Response:
    return Response(
        json.dumps(error.body()),
        status=error.status,
        headers={
            "x-amzn-ErrorType": error.code,
            "x-amzn-RequestId": request_id,
            "Content-Type": "application/json",
        },
    )


class _KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 with persistent connections, so that botocore's pooled connections are reused
    as they are with AWS: werkzeug's own handler answers every request with ``Connection:
    close`` (then drains the socket for 10 ms), which costs the client a TCP set-up and
    tear-down per call.

    Each request's body is read whole before the app runs (the stand-in's apps take bodies of at
    most a few MiB), so whatever the app reads or leaves unread, the connection is positioned at
    the next request; each answer is buffered and sent with its ``Content-Length``. A request
    without a length (chunked), an app that fails, or a client asking to close ends the
    connection after the answer. Idle connections are closed after ``timeout`` seconds."""

    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_IDLE_SECONDS
    # On a reused connection, a segment sent while an earlier one awaits the peer's delayed ACK
    # would wait ~40 ms under Nagle's algorithm.
    disable_nagle_algorithm = True

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        length = self.headers.get("Content-Length")
        if length is None or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # No length to read the body by: werkzeug's stream reads it; the connection ends.
            self.close_connection = True
        else:
            body = self.rfile.read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
            environ.pop("wsgi.input_terminated", None)
        answer: list[Any] = []

        chunks: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            answer[:] = [status, headers]
            return chunks.append

        try:
            iterable = self.server.app(environ, start_response)
            try:
                chunks.extend(iterable)
            finally:
                if hasattr(iterable, "close"):
                    iterable.close()
        except Exception:
            log.exception("the stand-in's %s failed answering %s", self.server.app, self.path)
            self.close_connection = True
            answer[:] = ["500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")]]
            chunks = [b"Internal Server Error"]
        status, headers = answer
        code, _, reason = status.partition(" ")
        payload = b"".join(chunks)
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if environ["REQUEST_METHOD"] != "HEAD":
            self.wfile.write(payload)


class BackgroundServer:
    """A threaded WSGI server on a loopback address, serving in a daemon thread."""

    def __init__(self, app: Callable[..., Any], host: str, port: int) -> None:
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_KeepAliveHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"emulator-{port}", daemon=True
        )

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 asked for any free port)."""
        return int(self._server.server_port)

    def start(self) -> None:
        """Start serving; returns once the socket is listening."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and wait for the serving thread to end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
