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

import json
import re
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from app.plain_wsgi import PlainRoute, json_bytes, json_headers, status_line
from app.realtime.hub import SHUTDOWN, Delivery, Watch
from app.realtime.parking import Parked

from . import services
from .access import bearer_token
from .schemas import parse_wait


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
    head = [f"{http} {status_line(200)}"]
    head += [f"{name}: {value}" for name, value in json_headers(data)]
    head.append("Connection: close")  # the server let go of this connection
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data
