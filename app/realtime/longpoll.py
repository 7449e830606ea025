"""Long polls: how a held request is opened, held and answered, whoever serves it.

Every long poll takes one path, for a `Held` of any feature (app/realtime/parking.py):

1. A turn to open it. The database and Redis pools are shared by every request of the
   worker, so a burst of waits queues for a turn here (app/realtime/turns.py), by its
   socket alone when the server lends it one.
2. Its channel is watched, then `open` reads the state: the answer now, or
3. it is parked in the lot until a delivery answers it, its deadline passes or the worker
   stops.

Under this project's gunicorn worker (app/server.py) a parked or queued request is a copy of
the client's socket and its answer a whole HTTP response written there; an answer known at
once goes back through WSGI, keeping the connection alive. Without the server's socket (the
test client, another WSGI server) the request's greenlet waits for the same lot to answer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from gevent.event import AsyncResult

from app import metrics
from app.errors import ServiceUnavailable
from app.responses import Headers, Response, error_response, json_response
from app.server import HANDED_OVER, NoDescriptorLeft, client_connection, gevent_socket

from .held import Held, Parked
from .hub import Hub
from .parking import ParkingLot
from .turns import TurnQueue

RETRY_AFTER_S = 5
# A queued answer is a few hundred bytes into an idle socket; a client that takes none of
# it within this long has gone.
WRITE_TIMEOUT_S = 5.0


class OnSocket(Parked):
    """Held by a plain copy of the client's socket: answered with a whole HTTP response."""

    __slots__ = ("sock", "http", "headers")

    def __init__(self, held: Held, sock, http: str, headers: Headers):
        super().__init__(held)
        self.sock = sock
        self.http = http  # the request's protocol, which the response speaks
        self.headers = headers

    def wire(self, response: Response) -> bytes:
        return response.closing_bytes(self.http)

    def encode(self, body: dict, memo: dict) -> bytes:
        # Every waiter of a fan-out with the same body and protocol: one encoding.
        key = (id(body), self.http, self.headers)
        data = memo.get(key)
        if data is None:
            data = memo[key] = self.wire(json_response(body, headers=self.headers))
        return data

    def send_now(self, data: bytes) -> bytes:
        try:
            sent = self.sock.send(data)  # a plain non-blocking socket: never waits
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = len(data)  # the client left; nothing to tell it
        return data[sent:]

    def send_and_close(self, data: bytes | None) -> None:
        sock, self.sock = self.sock, None
        try:
            if data:
                sock = gevent_socket(sock)  # to wait for the client cooperatively
                sock.settimeout(WRITE_TIMEOUT_S)
                sock.sendall(data)
        except OSError:
            pass  # the client left; nothing to tell it
        finally:
            sock.close()


class InGreenlet(Parked):
    """Held while the request's own greenlet waits for its answer."""

    __slots__ = ("headers", "result")

    def __init__(self, held: Held, headers: Headers):
        super().__init__(held)
        self.headers = headers
        self.result = AsyncResult()

    def wire(self, response: Response) -> Response:
        return response

    def encode(self, body: dict, memo: dict) -> Response:
        return json_response(body, headers=self.headers)

    def send_now(self, data: Response) -> None:
        self.result.set(data)

    def send_and_close(self, data: Response | None) -> None:
        if data is not None:
            self.result.set(data)


class LongPolls:
    def __init__(self, hub: Hub, turns, context: Callable[[], AbstractContextManager]):
        self.hub = hub
        self.lot = ParkingLot(hub, context)
        self.queue = TurnQueue(turns)
        self._context = context  # the application's, for what runs in greenlets of ours

    def serve(self, held: Held, environ, start_response, headers: Headers = ()):
        """Answer `held` (a WSGI response), with `headers` besides the policy's own."""
        connection = client_connection()
        if connection is None:
            return self._in_greenlet(held, headers).start(start_response)
        http = sys.intern(environ.get("SERVER_PROTOCOL", "HTTP/1.1"))  # one copy, not one each
        try:
            if self.queue.full():
                # No turn to open it now: it waits for one by its socket alone.
                parked = OnSocket(held, _take(connection), http, headers)
                metrics.waits_queued.inc()
                self.queue.put(lambda: self._open_and_answer(parked))
                return HANDED_OVER
            with self.queue.turns:
                body = self._open(held, lambda: OnSocket(held, _take(connection), http, headers))
        except BaseException:
            held.close()
            raise
        if body is None:
            return HANDED_OVER
        return _Body(json_response(body, headers=headers), start_response, held.close)

    def wait_empty(self, timeout: float) -> bool:
        """After a drain, block until everything queued and parked was answered."""
        deadline = time.monotonic() + timeout
        return (
            self.hub.closing
            and self.queue.wait_empty(timeout)
            and self.lot.wait_empty(max(deadline - time.monotonic(), 0))
        )

    def _in_greenlet(self, held: Held, headers: Headers) -> Response:
        parked = InGreenlet(held, headers)
        if self.queue.full():
            self.queue.put(lambda: self._open_and_answer(parked))
        else:
            with self.queue.turns:
                self._open_and_answer(parked)
        return parked.result.get()

    def _open(self, held: Held, make_parked: Callable[[], Parked]) -> dict | None:
        """With a turn: the answer body now, or None once the request is parked (or was
        answered on its own socket by a delivery that came in meanwhile)."""
        with self.hub.watch(held.channel) as watch:
            body = held.open(use_cache=not self.hub.redis_down)
            if body is not None:
                return body
            parked = make_parked()
            data = self.lot.park(parked, watch)
        if data is not None:
            parked.send_and_close(data)
            held.close()
        return None

    def _open_and_answer(self, parked: Parked) -> None:
        """Open a request that has its own way to the client, and answer it there if it is
        not parked: a queued one, or one whose greenlet waits."""
        held = parked.held
        try:
            with self._context():
                body = self._open(held, lambda: parked)
                data = None if body is None else parked.encode(body, {})
        except Exception as exc:
            held.close()
            parked.send_and_close(parked.wire(error_response(exc, "a long poll", parked.headers)))
            return
        if data is not None:
            parked.send_and_close(data)
            held.close()


def _take(connection):
    try:
        return connection.take_plain()
    except NoDescriptorLeft:
        raise ServiceUnavailable(
            "too many connections held, retry shortly", retry_after=RETRY_AFTER_S
        ) from None


class _Body:
    """An answer known at once, through WSGI; the server calls close() once it is written."""

    __slots__ = ("_chunks", "_on_close")

    def __init__(self, response: Response, start_response, on_close):
        self._chunks = response.start(start_response)
        self._on_close = on_close

    def __iter__(self):
        return iter(self._chunks)

    def close(self) -> None:
        self._on_close()
