"""A stream whose client left ends at once: its admin stream slot (SSE_MAX_STREAMS_PER_TOKEN)
is free for the next stream, and a refused stream says when to retry. On a real gunicorn
gevent server with the real Redis and PostgreSQL.

The streams here are sockets of the test's own, so a test decides how a client leaves: it
closes the connection (FIN) or resets it (RST). The servers keep the default heartbeat, far
longer than any wait below: a slot free in time was freed because the server saw the
client go, not by a heartbeat's failed write.
"""

import socket
import struct
import time

import pytest
import requests

from tests.support import servers
from tests.support.live import create, hub_stats

ADMIN = "admin-1"
LIMIT = 2  # SSE_MAX_STREAMS_PER_TOKEN of the servers below
HEARTBEAT = 15  # SSE_HEARTBEAT_INTERVAL of the servers below (the default), in seconds
# A release takes milliseconds; this bound leaves room for a loaded machine and is still
# far below the heartbeat.
AT_ONCE = 0.5

STATS_STREAM = "/api/admin/stats/stream"
SERVICES_STREAM = "/api/services/status/stream"


class RawStream:
    """An SSE request on a plain socket: the status and headers, the first event, and a
    client that leaves the way the test says."""

    def __init__(self, server, path: str, token: str):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self._buffer = b""
        status_line, *lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            data = self.sock.recv(65536)
            assert data, f"connection closed before {marker!r}; got {self._buffer!r}"
            self._buffer += data
        part, self._buffer = self._buffer.split(marker, 1)
        return part

    def first_event(self) -> str:
        """The stream's first SSE block: it is open and served."""
        assert self.status == 200, self.status
        assert self.headers["content-type"].startswith("text/event-stream"), self.headers
        return self._read_until(b"\n\n").decode()

    def leave(self, how: str) -> None:
        """Close the connection ("close": FIN) or reset it ("reset": RST)."""
        if how == "reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            # Unread data at close makes the kernel reset instead: read what has come.
            self.sock.setblocking(False)
            try:
                while self.sock.recv(65536):
                    pass
            except BlockingIOError:
                pass
        self.sock.close()


@pytest.fixture
def server(live_server, redis_client):
    return live_server(
        ADMIN_TOKENS=ADMIN,
        SSE_MAX_STREAMS_PER_TOKEN=LIMIT,
        SSE_HEARTBEAT_INTERVAL=HEARTBEAT,
    )


@pytest.fixture
def streams():
    """Open RawStreams; whatever is left open is closed after the test."""
    opened: list[RawStream] = []

    def open_(server, path: str, token: str = ADMIN) -> RawStream:
        stream = RawStream(server, path, token)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.sock.close()


def assert_refused(stream: RawStream) -> None:
    """429, with Retry-After one heartbeat interval (see app/admin/streams.py)."""
    assert stream.status == 429, stream.status
    assert stream.headers["content-type"].startswith("application/json"), stream.headers
    assert stream.headers["retry-after"] == str(HEARTBEAT), stream.headers
    stream.sock.close()


def realtime_stats(server) -> dict:
    response = requests.get(
        server.url + "/api/realtime/stats",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_stream_whose_client_left_gives_its_slot_back_at_once(server, streams):
    held = {path: streams(server, path) for path in (STATS_STREAM, SERVICES_STREAM)}
    for stream in held.values():
        stream.first_event()
    for path in (STATS_STREAM, SERVICES_STREAM):  # each refusal says when to retry
        assert_refused(streams(server, path))

    def accepted(path: str) -> RawStream | None:
        stream = streams(server, path)
        if stream.status == 429:
            stream.sock.close()
            return None
        stream.first_event()
        return stream

    for path, how in [
        (STATS_STREAM, "close"),
        (SERVICES_STREAM, "reset"),
        (STATS_STREAM, "reset"),
        (SERVICES_STREAM, "close"),
    ]:
        held[path].leave(how)
        left = time.monotonic()
        held[path] = servers.wait_until(
            lambda path=path: accepted(path), AT_ONCE, 0.01, f"the slot of {path} ({how})"
        )
        assert time.monotonic() - left < AT_ONCE
        # The new stream took the freed slot: the token holds all of them again.
        assert_refused(streams(server, SERVICES_STREAM))

    # The streams that were left ended, not only their slots: unregistered, and their
    # subscriptions dropped (the stats feed's one handler, one per services stream).
    live = realtime_stats(server)
    assert live["byKind"] == {"sse:stats": 1, "sse:services": 1}, live
    assert hub_stats(server)["handlers"] == 2


def test_an_order_stream_whose_client_left_ends_at_once(server, streams):
    """The order stream has no slot, but it holds a subscription and counts as open."""
    order = create(server)

    def order_streams() -> int:
        return realtime_stats(server)["byKind"].get("sse:order", 0)

    for how in ("close", "reset"):
        stream = streams(server, f"/api/orders/{order['orderId']}/events", order["accessToken"])
        assert "event: order_status" in stream.first_event()
        assert order_streams() == 1
        assert hub_stats(server)["waiters"] == 1

        stream.leave(how)
        servers.wait_until(lambda: order_streams() == 0, AT_ONCE, 0.01, f"stream ended ({how})")
        assert hub_stats(server)["waiters"] == 0
