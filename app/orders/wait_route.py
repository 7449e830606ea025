"""The long-poll route as plain WSGI, in front of Flask (app/plain_wsgi.py).

A held wait spends its life blocked. Served through Flask it keeps a request context, the
routing results and a deeper stack alive all that time. Served here, under gunicorn, a wait
that has to block is parked (app/realtime/parking.py): its greenlet ends, and the worker keeps
a duplicate of the client's socket until it writes the answer, so a held wait costs a few
KiB instead of a greenlet's worth. Without the server's socket (another WSGI server, the
test client) the wait blocks its greenlet as before. Same service, same answers, same JSON
errors and headers as the Flask route.
"""

from __future__ import annotations

import errno
import functools
import json
import re
import time
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from app import metrics
from app.errors import ServiceUnavailable
from app.plain_wsgi import (
    PlainRoute,
    closing_response,
    error_bytes,
    error_for,
    error_headers,
    json_bytes,
    json_headers,
    status_line,
)
from app.realtime.hub import SHUTDOWN, Delivery, Watch
from app.realtime.parking import Parked
from app.realtime.turns import Turn

from . import services
from .access import bearer_token
from .schemas import parse_wait

# A queued wait's answer is a few hundred bytes into an idle socket; a client that takes
# none of it within this long has gone.
WRITE_TIMEOUT_S = 5.0


class WaitRoute(PlainRoute):
    """`GET /api/orders/<id>/wait`."""

    path = re.compile(r"/api/orders/([^/]+)/wait")
    method = "GET"

    def serve(self, match, environ, start_response):
        answer = self._wait(match.group(1), environ)
        if answer is None:
            return None  # parked: the lot answers it
        body = json_bytes(self.app, answer.body)
        start_response(status_line(200), json_headers(body))
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
        http = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        park = None
        if server_socket is not None:
            queue = self.app.extensions["wait_queue"]
            if queue.full():
                # No turn to open it now: it waits for one by its socket alone.
                services.check_order_request(order_id, token)
                since, timeout_ms = params.since, params.timeout_ms
                sock = duplicate(server_socket)
                metrics.waits_queued.inc()
                queue.put(QueuedWait(self, sock, order_id, token, since, timeout_ms, client, http))
                return None

            def park(answer, since, known, slots, deadline, watch: Watch) -> bool:
                sock = duplicate(server_socket)
                if park_wait(self, sock, http, answer, since, known, slots, deadline, watch):
                    return True
                sock.close()
                return False

        return services.wait_for_update(
            order_id, token, params.since, params.timeout_ms, client=client, park=park
        )


def duplicate(sock):
    """The client's socket, duplicated to outlive the server's request; 503 when the worker
    has no file descriptor left for it (its open-files limit): the client retries later."""
    try:
        return sock.dup()
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        raise ServiceUnavailable(
            "too many connections held, retry shortly", retry_after=services.WAIT_RETRY_AFTER_S
        ) from None


def park_wait(route, sock, http, answer, since, known, slots, deadline, watch: Watch) -> bool:
    """Hand a wait about to block over to the parking lot, on `sock`: False when a delivery
    already waiting on its watch answered it (answer.body), and nothing was parked."""
    request = ParkedWait(sock, watch, deadline, route, answer, since, known, slots, http)
    return route.app.extensions["parking"].park(request, watch) is None


class QueuedWait:
    """A wait that came when every turn to open one was taken (app/realtime/turns.py): its
    socket and request, until the queue runs it with a turn."""

    __slots__ = ("route", "sock", "order_id", "token", "since", "timeout_ms", "client", "http")
    __slots__ += ("arrived",)

    def __init__(self, route, sock, order_id, token, since, timeout_ms, client, http):
        self.route = route
        self.sock = sock  # a duplicate of the client's socket; the server closed its own
        self.order_id = order_id
        self.token = token
        self.since = since
        self.timeout_ms = timeout_ms  # from `arrived`, as if it had not queued
        self.client = client
        self.http = http
        self.arrived = time.monotonic()

    def run(self, turn: Turn) -> None:
        """Open the wait, as the route would: answer it on the socket, or park it there."""
        app = self.route.app
        parked = False
        try:
            with app.app_context():
                try:
                    response, answer = self._open(turn)
                except Exception as exc:
                    response, answer = self._error(*error_for(exc, "a queued wait")), None
            if response is None:
                parked = True  # the lot owns the socket now
                return
            self.sock.settimeout(WRITE_TIMEOUT_S)
            self.sock.sendall(response)
        except OSError:
            pass  # the client left while it queued
        finally:
            if not parked:
                self.sock.close()
        if answer is not None:
            answer.written()

    def _open(self, turn: Turn) -> tuple[bytes | None, services.WaitAnswer | None]:
        park = functools.partial(park_wait, self.route, self.sock, self.http)
        answer = services.wait_for_update(
            self.order_id,
            self.token,
            self.since,
            self.timeout_ms,
            client=self.client,
            park=park,
            started=self.arrived,
            turn=turn,
        )
        if answer is None:
            return None, None
        return _http_response(self.route.app, self.http, answer.body), answer

    def _error(self, status: int, message: str, retry_after) -> bytes:
        body = error_bytes(self.route.app, message)
        return closing_response(self.http, status, error_headers(body, retry_after), body)


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
        self.wait.written(at=self.written_at)
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
    data = json_bytes(app, body)
    return closing_response(http, 200, json_headers(data), data)
