"""WebSocket connections on gevent workers: flask-sock does the upgrade (simple-websocket
underneath, which runs on gunicorn's gevent worker once the standard library is patched),
this module runs a connection.

A connection sends the messages a feature gives it, and notices at once when the peer
leaves: one greenlet sends while another reads, and the request's greenlet waits for the
first of them to finish. A peer that stops answering the pings sent every `ping_interval`
seconds is closed by simple-websocket, which the reader sees like any other departure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import gevent
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from .connections import Connection, registry

sock = Sock()

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001


class Close(NamedTuple):
    """The last item of a message stream: close the socket with this code and reason."""

    code: int
    reason: str


def init_app(app) -> None:
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {
            "ping_interval": app.config["SSE_HEARTBEAT_INTERVAL"],
            # Clients send nothing but control frames: refuse large messages outright.
            "max_message_size": 4096,
        },
    )
    sock.init_app(app)


def serve(ws, kind: str, key: str, messages: Callable[[Connection], Iterator[str | Close]]) -> None:
    """Send `messages(connection)` on `ws` until a Close, the end, or the peer leaving."""
    connection = registry.open(kind, key)
    sender = gevent.spawn(_send_all, ws, messages(connection))
    reader = gevent.spawn(_read_until_closed, ws)
    try:
        gevent.wait([sender, reader], count=1)
    finally:
        # Neither holds anything to release: the sender waits on the hub or the socket, the
        # reader on the socket. The feature releases its subscription after this returns.
        gevent.killall([sender, reader])
        registry.close(connection)


def _send_all(ws, messages: Iterator[str | Close]) -> None:
    try:
        for message in messages:
            if isinstance(message, Close):
                ws.close(message.code, message.reason)
                return
            ws.send(message)
        ws.close(NORMAL_CLOSURE, "")
    except ConnectionClosed:
        pass  # the peer left first


def _read_until_closed(ws) -> None:
    try:
        while True:
            ws.receive()  # whatever a client sends is ignored
    except ConnectionClosed:
        pass
