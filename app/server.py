"""The gunicorn worker: gevent's, plus what a held request needs from the server.

`gunicorn.conf.py` names this class as its `worker_class`. Everything the application needs
from gunicorn is here, through the worker's own overridable methods, verified on gunicorn
27.0 (requirements.txt pins it; tests/unit/test_server.py fails when these change):

- `handle_request(listener_name, req, sock, addr)` runs one request in the connection's
  greenlet. Around it, the client's socket is made available to the application as a
  `ClientConnection` (a context variable: greenlets each have their own).
- `is_already_handled(respiter)`: a request the application answers later on its own copy
  of the socket (a parked long poll) returns `HANDED_OVER`; gunicorn then writes nothing,
  and the connection ends as gunicorn ends one that must close (StopIteration out of
  `handle_request`, which `AsyncWorker.handle` takes as "close this connection").
- `handle_error(req, client, addr, exc)`: a request gunicorn refuses before the application
  sees it (a request line or headers over the limits, a malformed request) gets gunicorn's
  status, logged by gunicorn as usual, with the API's JSON error instead of its HTML page.
- `handle_exit` (SIGTERM: stop, and HUP/USR2 reloads): the listeners close first, then
  held requests are answered and streams ended at once, and gunicorn stops as usual; before
  the process ends, what the application holds outside gunicorn's requests gets the rest of
  the graceful timeout. Closing first matters: the clients the drain answers come straight
  back, and a listener still open would queue them only to reset them when it closes.
- The listeners are gevent `StreamServer`s that `GeventWorker.run` makes from the name
  `StreamServer` in gunicorn's ggevent module; that name is this module's `Listener`,
  which takes the connections the kernel already queued before it closes (a closed
  listener resets them, and a proxy never resends a POST it had sent).
- `handle(listener, client, addr)` serves one connection, and reads only the listener's
  address (`getsockname`); it is given that address kept aside, because a connection
  taken while closing is served after its listener was closed.

Importing this module loads no part of the application (gunicorn's master imports it).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import gevent
import gevent.socket
from gevent import monkey
from gevent.server import StreamServer
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from app.lifecycle import Lifecycle

# gunicorn releases (major, minor) this module was verified on; requirements.txt pins one.
VERIFIED_GUNICORN = {(27, 0)}

# The standard library's socket class, whatever monkey-patching made of the name.
PlainSocket = monkey.get_original("socket", "socket")

# What the application returns for a request it took over.
HANDED_OVER = ["handed over"]


class NoDescriptorLeft(Exception):
    """The worker is out of file descriptors (its open-files limit): nothing can be held."""


class ClientConnection:
    """The client's socket of the request being served, for an application that answers it
    later by itself."""

    __slots__ = ("_sock", "handed_over")

    def __init__(self, sock):
        self._sock = sock
        self.handed_over = False  # the application returned HANDED_OVER

    def take(self):
        """A copy of the client's socket (gevent's), the application's to write and close.
        A request that keeps it returns HANDED_OVER."""
        with _descriptors():
            return self._sock.dup()

    def take_plain(self) -> socket.socket:
        """As take(), as a plain non-blocking socket: none of gevent's watchers, a few
        hundred bytes less for each of thousands held (gevent_socket() when it must wait)."""
        with _descriptors():
            plain = PlainSocket(fileno=os.dup(self._sock.fileno()))
        plain.setblocking(False)
        return plain


def gevent_socket(plain: socket.socket):
    """The socket take_plain() gave, as gevent's, to wait on cooperatively."""
    return gevent.socket.socket(fileno=plain.detach())


@contextmanager
def _descriptors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise NoDescriptorLeft from None
        raise


_current: ContextVar[ClientConnection | None] = ContextVar("client_connection", default=None)


def client_connection() -> ClientConnection | None:
    """The connection of the request being served; None outside this worker (the test
    client, another WSGI server)."""
    return _current.get()


@contextmanager
def serving(sock) -> Iterator[ClientConnection]:
    """Make `sock` the connection of the request served inside."""
    connection = ClientConnection(sock)
    token = _current.set(connection)
    try:
        yield connection
    finally:
        _current.reset(token)


class Listener(StreamServer):
    """A listening socket's server that answers what was queued on it before closing."""

    # Connections taken at most while closing: above any listen backlog (2048 here).
    QUEUED_AT_MOST = 10_000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _listeners.append(self)

    def close(self):
        if not self.closed:
            # Nothing yields in this loop, so it ends once the queue is empty: the
            # connections it hands over are served after the listener is closed.
            for _ in range(self.QUEUED_AT_MOST):
                accepted = self.do_read()  # None once nothing is queued (non-blocking)
                if not accepted:
                    break
                self.do_handle(*accepted)
        super().close()


class _ListenerAddress:
    """What gunicorn reads of a listener as it starts serving a connection (its address),
    still there once the listener is closed."""

    __slots__ = ("address",)

    def __init__(self, address):
        self.address = address

    def getsockname(self):
        return self.address


_listeners: list[Listener] = []  # this worker's, made by GeventWorker.run
ggevent.StreamServer = Listener


class Worker(GeventWorker):
    def handle(self, listener, client, addr):
        super().handle(self._addresses[id(listener)], client, addr)

    def handle_request(self, listener_name, req, sock, addr):
        with serving(sock) as connection:
            super().handle_request(listener_name, req, sock, addr)
        if connection.handed_over:
            raise StopIteration  # gunicorn closes its socket; the application has a copy

    def is_already_handled(self, respiter) -> bool:
        if respiter is HANDED_OVER:
            _current.get().handed_over = True
            return True
        return super().is_already_handled(respiter)

    def run(self):
        self._addresses = {id(s): _ListenerAddress(s.getsockname()) for s in self.sockets}
        lifecycle = Lifecycle.of(self.wsgi)
        lifecycle.start()
        super().run()  # until stopped, and gunicorn's own requests are done
        lifecycle.wait_drained(time.monotonic() + self.cfg.graceful_timeout)

    def handle_error(self, req, client, addr, exc):
        written = _Written()
        super().handle_error(req, written, addr, exc)  # gunicorn's status and access log
        try:
            client.sendall(written.as_json_error(exc))
        except OSError:
            pass  # the client is gone: nothing to answer

    def handle_exit(self, sig, frame):
        # A signal handler must not block or switch greenlets: the stop runs in its own.
        gevent.spawn(self._stop_serving)
        super().handle_exit(sig, frame)

    def _stop_serving(self) -> None:
        for listener in _listeners:
            listener.close()
        Lifecycle.of(self.wsgi).drain()


class _Written:
    """Takes the place of the client's socket while gunicorn writes its error page, so the
    client gets the same status as the API's JSON error."""

    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data

    def as_json_error(self, exc: BaseException) -> bytes:
        from app.errors import ApiError  # loaded already: the worker serves the application
        from app.responses import error_response

        status_line = self.data.split(b"\r\n", 1)[0].decode("latin-1")
        _http, status, reason = (status_line.split(" ", 2) + ["", "", ""])[:3]
        status = int(status) if status.isdigit() else 500
        if status >= 500:
            reason = "Internal Server Error"  # the details are in the log, not for the client
        error = ApiError((str(exc) if status < 500 else "") or reason or "Bad Request")
        error.status = status
        return error_response(error, "a request the server refused").closing_bytes("HTTP/1.1")
