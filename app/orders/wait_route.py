"""The long-poll route as plain WSGI, in front of Flask.

A held wait spends its life blocked. Served through Flask it keeps a request context, the
routing results and a deeper stack alive all that time. Served here, under gunicorn, a wait
that has to block is parked (app/realtime/parking.py): its greenlet ends, and the worker keeps
a duplicate of the client's socket until it writes the answer, so a held wait costs a few
KiB instead of a greenlet's worth. Without the server's socket (another WSGI server, the
test client) the wait blocks its greenlet as before. Same service, same answers, same JSON
errors and headers. Every other request, and a cross-origin one when CORS is on (flask-cors
answers those), goes on to Flask.
"""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict
from werkzeug.http import HTTP_STATUS_CODES

from app.errors import DATABASE_DOWN, ApiError
from app.realtime.hub import SHUTDOWN, Delivery, Watch, first_line
from app.realtime.parking import Parked

from . import services
from .access import bearer_token
from .schemas import parse_wait

log = logging.getLogger(__name__)

WAIT_PATH = re.compile(r"/api/orders/([^/]+)/wait")
SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]


class WaitRoute:
    """WSGI middleware serving `GET /api/orders/<id>/wait`; the rest goes to `next_app`."""

    def __init__(self, app, next_app):
        self.app = app
        self.next_app = next_app

    def __call__(self, environ, start_response):
        match = WAIT_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if (
            match is None
            or environ["REQUEST_METHOD"] != "GET"
            or (self.app.config["CORS_ORIGINS"] and "HTTP_ORIGIN" in environ)
        ):
            return self.next_app(environ, start_response)
        with self.app.app_context():
            try:
                answer = self._wait(match.group(1), environ)
            except ApiError as err:
                return self._error(start_response, err.status, err.message, err.retry_after)
            except DATABASE_DOWN as err:
                log.error("database unavailable: %s", first_line(err))
                return self._error(start_response, 503, "database unavailable, retry shortly")
            except Exception:
                log.exception("wait failed")
                return self._error(start_response, 500, "Internal Server Error")
            if answer is None:
                # Parked: the lot answers on a socket of its own. gunicorn ends a request
                # that raises StopIteration by closing its socket, writing nothing.
                raise StopIteration
            body = _json(self.app, answer.body)
        start_response(_status_line(200), _json_headers(body))
        return _Body(body, answer.written)

    def _wait(self, order_id: str, environ) -> services.WaitAnswer | None:
        cfg = self.app.config
        args = MultiDict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        params = parse_wait(
            args,
            default_timeout_ms=cfg["LONGPOLL_DEFAULT_TIMEOUT_MS"],
            max_timeout_ms=cfg["LONGPOLL_MAX_TIMEOUT_MS"],
        )
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", "")) or args.get("token") or None
        del args  # nothing of the request outlives its parsing
        client = environ.get("REMOTE_ADDR") or "-"
        server_socket = environ.get("gunicorn.socket")
        park = None
        if server_socket is not None:

            def park(answer, since, known, slots, deadline, watch: Watch) -> bool:
                sock = server_socket.dup()
                http = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
                request = ParkedWait(sock, watch, deadline, self, answer, since, known, slots, http)
                if self.app.extensions["parking"].park(request, watch) is None:
                    return True
                request.sock.close()
                return False

        return services.wait_for_update(
            order_id, token, params.since, params.timeout_ms, client=client, park=park
        )

    def _error(self, start_response, status: int, message: str, retry_after=None):
        body = _json(self.app, {"success": False, "error": message})
        headers = _json_headers(body)
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        start_response(_status_line(status), headers)
        return [body]


def _status_line(status: int) -> str:
    """As werkzeug writes it: "404 NOT FOUND"."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


def _json(app, value) -> bytes:
    """As Flask's jsonify writes it (outside debug mode)."""
    return app.json.dumps(value, separators=(",", ":")).encode() + b"\n"


def _json_headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *SECURITY_HEADERS,
    ]


class _Body:
    """The answer's bytes; the server calls close() once they are written."""

    __slots__ = ("_chunks", "_on_close")

    def __init__(self, body: bytes, on_close):
        self._chunks = (body,)
        self._on_close = on_close

    def __iter__(self):
        return iter(self._chunks)

    def close(self) -> None:
        self._on_close()


class ParkedWait(Parked):
    """A wait parked in the lot: answers itself with a whole HTTP response."""

    __slots__ = ("route", "wait", "since", "known", "slots", "http")

    def __init__(self, sock, watch: Watch, deadline, route, wait, since, known, slots, http):
        super().__init__(sock, watch.channel, deadline)
        self.route = route
        self.wait = wait
        self.since = since
        self.known = known
        self.slots = slots
        self.http = http

    def answer(self, delivery: Delivery, memo: dict) -> bytes | None:
        published = memo.get("order")
        if published is None:
            published = memo["order"] = json.loads(delivery.data)
        if not services.is_news(published, self.since):
            return None
        self.wait.received = delivery.received
        key = (self.since, self.http)
        if key not in memo:  # every waiter of a fan-out with the same since: one encoding
            body = services.answer_body(published, self.since, delivery.source)
            memo[key] = (body, _http_response(self.route.app, self.http, body))
        self.wait.body, response = memo[key]
        return response

    def written(self) -> None:
        services.release_parked_wait(self.wait, self.slots)
        self.wait.written()
        self.wait = self.known = self.slots = None  # the lot may hold this a while longer

    @classmethod
    def finish(cls, requests: list[ParkedWait], reason: str) -> list[bytes]:
        app = requests[0].route.app
        source = SHUTDOWN if reason == SHUTDOWN else "timeout"
        with app.app_context():
            bodies = services.final_answers(
                [(r.wait.order_id, r.since, r.known) for r in requests], source
            )
        responses = []
        for request, body in zip(requests, bodies, strict=True):
            request.wait.body = body
            responses.append(_http_response(app, request.http, body))
        return responses


def _http_response(app, http: str, body: dict) -> bytes:
    data = _json(app, body)
    head = [f"{http} {_status_line(200)}"]
    head += [f"{name}: {value}" for name, value in _json_headers(data)]
    head.append("Connection: close")  # the server let go of this connection
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data
