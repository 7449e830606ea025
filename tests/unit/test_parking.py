"""The parking lot on its own: real Redis, real sockets (socketpairs), no HTTP."""

import socket
import time

import gevent
import pytest

from app.realtime.longpoll import OnSocket
from app.realtime.parking import ParkingLot
from tests.support.servers import eventually


class Answering:
    """A held request that answers any delivery with `response` and notes who answered it
    and how often its bookkeeping ran."""

    def __init__(self, channel: str, response: bytes):
        self.channel = channel
        self.deadline = time.monotonic() + 30
        self.response = response
        self.answered_in = None
        self.recorded = 0

    def answer(self, delivery, memo):
        self.answered_in = gevent.getcurrent()
        return self.response

    @staticmethod
    def finish(held, reason):
        return [reason.encode()] * len(held)

    def close(self, written_at=None):
        self.recorded += 1


class Raw(OnSocket):
    """On a socket, writing the held request's answer as it is (no HTTP around it)."""

    __slots__ = ()

    def encode(self, body, memo):
        return body


@pytest.fixture
def lot(make_hub, redis_url, redis_client):
    hub = make_hub(redis_url)
    eventually(lambda: hub.connected, message="hub connected")
    lot = ParkingLot(hub)
    yield lot
    lot.stop()


def park(
    lot: ParkingLot, channel: str, response: bytes, within: float = 30
) -> tuple[socket.socket, Raw, Answering]:
    client, server = socket.socketpair()
    held = Answering(channel, response)
    held.deadline = time.monotonic() + within
    request = Raw(held, server, "HTTP/1.1", ())
    assert lot.park(request, lot._hub.watch(channel)) is None
    return client, request, held


def read_all(client: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the lot writes, up to its close."""
    client.settimeout(timeout)
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_answer_is_written_by_the_hub_as_it_reads_the_delivery(lot, redis_client):
    client, request, held = park(lot, "parking:small", b"answer")
    redis_client.publish("parking:small", "news")

    assert read_all(client) == b"answer"
    assert held.answered_in is not lot._writer  # not queued for the writer greenlet
    assert request.written_at is not None
    eventually(lambda: held.recorded == 1, message="bookkeeping by the writer")
    assert lot.count == 0


def test_an_answer_the_socket_does_not_take_at_once_is_finished_by_the_writer(lot, redis_client):
    """Larger than the socket buffers: the hub sends what fits, the writer the rest."""
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB
    client, request, held = park(lot, "parking:big", big)
    redis_client.publish("parking:big", "news")

    eventually(lambda: request.done, message="answered")
    gevent.sleep(0.2)  # the client reads only now: the rest waits in the lot
    assert held.recorded == 0
    assert read_all(client) == big
    eventually(lambda: held.recorded == 1, message="bookkeeping once written")
    assert lot.count == 0


def test_a_client_gone_before_its_answer_is_no_trouble_for_the_others(lot, redis_client):
    gone, _, first = park(lot, "parking:gone", b"first")
    client, _, second = park(lot, "parking:gone", b"second")
    gone.close()
    redis_client.publish("parking:gone", "news")

    assert read_all(client) == b"second"
    eventually(lambda: first.recorded == second.recorded == 1, message="both recorded")
    assert lot.count == 0


def numsub(client, channel: str) -> int:
    return dict(client.pubsub_numsub(channel))[channel]


def test_a_channel_is_let_go_with_its_last_parked_request(lot, redis_client):
    """One request on a channel, then a second: the first times out and the second stays
    parked on the channel; once it is answered the channel is unsubscribed."""
    channel = "parking:last"
    early, _, first = park(lot, channel, b"early", within=0.3)
    late, _, second = park(lot, channel, b"late")
    assert numsub(redis_client, channel) == 1

    assert read_all(early) == b"timeout"
    eventually(lambda: first.recorded == 1, message="the first recorded")
    assert lot.count == 1
    assert numsub(redis_client, channel) == 1  # the second still holds the channel

    redis_client.publish(channel, "news")
    assert read_all(late) == b"late"
    eventually(lambda: numsub(redis_client, channel) == 0, message="channel let go")
    assert lot.count == 0


def test_a_lone_parked_request_lets_its_channel_go_once_answered(lot, redis_client):
    channel = "parking:lone"
    client, _, held = park(lot, channel, b"answer")
    redis_client.publish(channel, "news")

    assert read_all(client) == b"answer"
    eventually(lambda: numsub(redis_client, channel) == 0, message="channel let go")
    assert lot.count == 0 and held.recorded == 1
