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
from typing import Literal, NamedTuple

import gevent
from flask_sock import Sock
from pydantic import Field
from simple_websocket import ConnectionClosed

from app.validation import Model, validated

from .connections import Connection, registry

sock = Sock()

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001


class Close(NamedTuple):
    """The last item of a message stream: close the socket with this code and reason."""

    code: int
    reason: str


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


_ASCII = r"[\t\x20-\x7e]"
_TOKEN_LIST_WITH_UPGRADE = rf"^({_ASCII}*,)?[ \t]*{_any_case('upgrade')}[ \t]*(,{_ASCII}*)?$"


class Handshake(Model):
    """The opening request's headers (RFC 6455 4.1), checked before the upgrade so that a
    malformed one is a 400 with the JSON error, not a failure inside the WebSocket server."""

    upgrade: str = Field(alias="Upgrade", pattern=f"^{_any_case('websocket')}$")
    connection: str = Field(
        alias="Connection",
        pattern=_TOKEN_LIST_WITH_UPGRADE,
        description="A list that holds Upgrade (Firefox sends `keep-alive, Upgrade`).",
    )
    version: Literal["13"] = Field(alias="Sec-WebSocket-Version")
    key: str = Field(
        alias="Sec-WebSocket-Key",
        pattern="^[A-Za-z0-9+/]{22}==$",
        description="16 random bytes, base64.",
    )


def check_handshake(headers) -> None:
    validated(Handshake, {name: headers.get(name) for name in HANDSHAKE_HEADERS})


HANDSHAKE_HEADERS = [field.alias for field in Handshake.model_fields.values()]


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
    except (ConnectionClosed, OSError):
        pass  # the peer left first (a reset while closing included)


def _read_until_closed(ws) -> None:
    try:
        while True:
            ws.receive()  # whatever a client sends is ignored
    except ConnectionClosed:
        pass
