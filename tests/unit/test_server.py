"""The gunicorn adapter (app/server.py): the worker methods it builds on are still there and
still behave as it needs; a new gunicorn that changes them fails here first."""

import errno
import inspect
import re
import socket

import gunicorn
import pytest
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from app import server


def test_gunicorn_is_a_verified_release():
    major, minor, *_ = (int(part) for part in gunicorn.__version__.split("."))
    assert (major, minor) in server.VERIFIED_GUNICORN, gunicorn.__version__


def test_the_worker_methods_it_overrides_keep_their_shape():
    assert issubclass(server.Worker, GeventWorker)
    assert list(inspect.signature(GeventWorker.handle_request).parameters) == [
        "self",
        "listener_name",
        "req",
        "sock",
        "addr",
    ]
    assert list(inspect.signature(AsyncWorker.is_already_handled).parameters) == [
        "self",
        "respiter",
    ]
    assert list(inspect.signature(GeventWorker.handle_exit).parameters) == ["self", "sig", "frame"]
    # handle_error writes its page to the client socket it is given, through write_error
    # (which needs only gettimeout and sendall): the worker gives it a recorder instead.
    assert list(inspect.signature(GeventWorker.handle_error).parameters) == [
        "self",
        "req",
        "client",
        "addr",
        "exc",
    ]
    assert "util.write_error(client, " in inspect.getsource(GeventWorker.handle_error)
    # A request that took the connection over raises StopIteration out of handle_request:
    # handle() must take it as "close this connection", as it does for its own.
    assert "except StopIteration" in inspect.getsource(AsyncWorker.handle)
    # handle_request asks is_already_handled about the application's answer.
    assert "self.is_already_handled(respiter)" in inspect.getsource(AsyncWorker.handle_request)


def test_only_a_handed_over_answer_is_already_handled():
    worker = server.Worker.__new__(server.Worker)
    with server.serving(socket.socket()) as connection:
        assert not worker.is_already_handled([b"an answer"])
        assert not connection.handed_over
        assert worker.is_already_handled(server.HANDED_OVER)
        assert connection.handed_over
    assert server.client_connection() is None


def test_taking_the_connection_is_a_socket_of_the_applications_own():
    left, right = socket.socketpair()
    with server.serving(right):
        copy = server.client_connection().take()
    right.close()  # the server closes its own: the copy still reaches the client
    copy.sendall(b"answer")
    copy.close()
    assert left.recv(16) == b"answer"
    left.close()


def test_a_plain_copy_never_waits_and_becomes_geventish_to_wait():
    left, right = socket.socketpair()
    with server.serving(right):
        plain = server.client_connection().take_plain()
    right.close()
    assert type(plain) is server.PlainSocket and plain.getblocking() is False
    with pytest.raises(BlockingIOError):
        plain.recv(1)  # nothing to read: raises at once instead of blocking the worker
    plain.send(b"now")
    waiting = server.gevent_socket(plain)
    assert plain.fileno() == -1  # the same descriptor, now the gevent socket's
    waiting.settimeout(1)
    waiting.sendall(b" and later")
    waiting.close()
    assert left.recv(32) == b"now and later"
    left.close()


def test_a_worker_out_of_descriptors_is_told_apart():
    class NoDescriptorLeft:
        def dup(self):
            raise OSError(errno.EMFILE, "Too many open files")

    with server.serving(NoDescriptorLeft()), pytest.raises(server.NoDescriptorLeft):
        server.client_connection().take()


def test_the_listeners_are_made_from_the_name_it_replaces():
    # GeventWorker.run makes each listener's server from ggevent's StreamServer at call
    # time, handing it the worker's handle bound to the listening socket.
    from gunicorn.workers import ggevent

    assert ggevent.StreamServer is server.Listener
    run = inspect.getsource(GeventWorker.run)
    assert "StreamServer(s, handle=hfun" in run
    assert "hfun = partial(self.handle, s)" in run
    assert "server.close()" in run


def test_handle_reads_nothing_of_the_listener_but_its_address():
    # The worker hands handle() the address kept aside, not the socket, which may be
    # closed by then: any other use of the listener would fail on it.
    allowed = re.compile(r"listener\.getsockname\(\)|\(self, listener, |\(listener, ")
    for method in (AsyncWorker.handle, AsyncWorker._try_h2c_upgrade, AsyncWorker.handle_http2):
        source = inspect.getsource(method)
        uses = [m.start() for m in re.finditer(r"listener\b", source)]
        allowed_uses = [m.start() + m.group().index("listener") for m in allowed.finditer(source)]
        assert uses and sorted(uses) == sorted(allowed_uses), method.__name__


def test_a_closing_listener_takes_what_was_queued_on_it():
    """Connections the kernel accepted before the close are handed over, not reset."""
    import gevent
    import gevent.socket

    listening = gevent.socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    taken = []
    listener = server.Listener(listening, handle=lambda sock, addr: taken.append(sock))
    clients = [socket.create_connection(listening.getsockname()) for _ in range(5)]
    listener.close()  # never started: all five wait in the kernel's queue
    gevent.sleep(0)  # the handlers run
    assert len(taken) == 5
    assert listener.closed
    for sock in taken + clients:
        sock.close()
