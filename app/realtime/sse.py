"""Server-Sent Events: framing, the streaming response, and the loop every stream shares.

A stream is a generator of already framed strings. `serve` wraps it so that it is counted in
this worker's connection registry until the client goes, and releases whatever the caller
holds for it (a per-token stream slot). The stream ends as soon as its client closes the
connection (`Departure`), not at the next write that fails: a closed dashboard tab gives its
slot back at once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import gevent
from flask import Response, stream_with_context
from gevent.hub import get_hub

from app.server import NoDescriptorLeft, client_connection
from app.validation import event_id

from .connections import Connection, registry

READ = 1  # libev's EV_READ


def event(data, *, name: str | None = None, event_id: int | str | None = None) -> str:
    """One SSE event: `event:`, `id:` and `data:` lines (data JSON-encoded unless a str)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = []
    if name:
        lines.append(f"event: {name}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    """A comment line: ignored by EventSource, it keeps proxies and the socket alive."""
    return f": {text}\n\n"


HEARTBEAT = comment("heartbeat")


def retry(milliseconds: int) -> str:
    """The delay EventSource waits before it reconnects, from now on."""
    return f"retry: {milliseconds}\n\n"


def last_event_id(request) -> int | None:
    """The `Last-Event-ID` header an EventSource sends on reconnect, else `?lastEventId=`;
    either, when malformed, is a 400 (even when the other one would do)."""
    header = event_id(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    query = event_id(request.args.get("lastEventId"), "lastEventId")
    return header if header is not None else query


def serve(
    kind: str, key: str, frames: Callable[[Connection], Iterator[str]], *, release=None
) -> Response:
    """Stream `frames(connection)` as text/event-stream, registered as a connection."""
    connection = registry.open(kind, key)
    released = False

    def close() -> None:
        nonlocal released
        if not released:
            released = True
            registry.close(connection)
            if release is not None:
                release()

    def body() -> Iterator[str]:
        departure = Departure.watch(gevent.getcurrent())
        stream = frames(connection)
        try:
            # A loop, not `yield from`: when gunicorn closes this generator, the departure
            # watch stops before the stream's own cleanup runs, so nothing interrupts it.
            for frame in stream:  # noqa: UP028
                yield frame
        finally:
            if departure is not None:
                departure.stop()
            stream.close()
            close()

    response = Response(stream_with_context(body()), mimetype="text/event-stream")
    # WSGI closes every response, even one whose generator never started.
    response.call_on_close(close)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


class ClientGone(gevent.GreenletExit):
    """Thrown into a stream's greenlet when its client closed the connection. A kind of
    GreenletExit: the stream unwinds as a killed greenlet does (libraries drop a connection
    they were using then), and gunicorn's gevent worker ends the request quietly."""


class Departure:
    """Ends a stream the moment its client closes the connection.

    Without it, the server learns of a closed client only when a write fails: the first
    write after the close still succeeds, so a quiet stream held its greenlet, its
    subscriptions and its slot for up to two heartbeat intervals. An SSE client sends
    nothing after its request, so its socket turning readable means it closed (a read
    returns nothing) or was reset. The check peeks, consuming nothing; a client that does
    send something is left to the failed write. An io watcher on a copy of the socket: no
    greenlet per stream. On departure the stream's greenlet gets ClientGone thrown in at
    whatever it waits on, as gevent.Timeout does, and its cleanup gives everything back.
    """

    def __init__(self, sock, stream: gevent.Greenlet):
        self._sock = sock
        self._stream = stream
        self._watcher = get_hub().loop.io(sock.fileno(), READ)
        self._watcher.start(self._on_readable)

    @classmethod
    def watch(cls, stream: gevent.Greenlet) -> Departure | None:
        """Watch the client of the request being served for `stream`; None outside our
        gunicorn worker (the test client) or without a descriptor to spare, where the
        failed write of a heartbeat still ends the stream."""
        client = client_connection()
        if client is None:
            return None
        try:
            sock = client.take()
        except (NoDescriptorLeft, OSError):
            return None
        sock.setblocking(False)  # this copy's own setting: a peek never waits
        return cls(sock, stream)

    def _on_readable(self) -> None:
        # In the hub's loop: nothing here may block.
        try:
            gone = not self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return  # woken for nothing
        except OSError:
            gone = True  # reset by the peer
        self.stop()
        if gone and not self._stream.dead:
            self._stream.throw(ClientGone)

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
            self._sock.close()
