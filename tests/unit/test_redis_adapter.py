"""The redis-py internals app/realtime/redis_adapter.py relies on are still there.

A failure here means redis-py changed under the adapter: re-verify the adapter against the
new release (and widen VERIFIED_REDIS_PY) before moving the pin in requirements.txt.
"""

import inspect
import re
import socket
import uuid

import pytest
import redis
from redis.sentinel import Sentinel

from app.realtime.redis_adapter import (
    VERIFIED_REDIS_PY,
    BlockingSentinelPool,
    CheckedWithoutYielding,
    FrameWaiter,
    SentinelCheckedWithoutYielding,
    pool_exhausted,
    pubsub_connection_options,
)
from app.realtime.redis_target import RedisTarget


def version(text: str) -> tuple[int, int, int]:
    major, minor, patch = re.match(r"(\d+)\.(\d+)\.(\d+)", text).groups()
    return int(major), int(minor), int(patch)


@pytest.fixture
def pubsub_conn(redis_url):
    options = pubsub_connection_options(connect_timeout=1.0, socket_timeout=2.0)
    conn = RedisTarget(redis_url).connection_factory(**options)()
    conn.connect()
    yield conn
    conn.disconnect()


def test_redis_py_is_a_verified_release():
    low, high = VERIFIED_REDIS_PY
    assert low <= version(redis.__version__) <= high, (
        f"redis-py {redis.__version__} is outside the adapter's verified range {VERIFIED_REDIS_PY}"
    )


def test_a_connection_has_its_socket_and_hiredis_reader(pubsub_conn):
    assert isinstance(pubsub_conn._sock, socket.socket)
    reader = pubsub_conn._parser._reader  # hiredis's Reader, where frames already read wait
    assert callable(reader.has_data)
    assert reader.has_data() is False
    frames = FrameWaiter(pubsub_conn)
    try:
        assert frames.prioritized, "FrameWaiter fell back to can_read"
    finally:
        frames.close()


def test_pubsub_frames_on_resp2_are_plain_lists(pubsub_conn, redis_client):
    channel = f"adapter:{uuid.uuid4()}"
    pubsub_conn.send_command("SUBSCRIBE", channel)
    assert pubsub_conn.read_response() == ["subscribe", channel, 1]
    assert redis_client.publish(channel, "hello") == 1
    assert pubsub_conn.read_response() == ["message", channel, "hello"]


def test_sharded_frames_are_plain_lists_too(pubsub_conn, redis_client):
    channel = f"adapter:{uuid.uuid4()}"
    commands = [("SSUBSCRIBE", channel)]
    pubsub_conn.send_packed_command(pubsub_conn.pack_commands(commands))
    assert pubsub_conn.read_response() == ["ssubscribe", channel, 1]
    assert redis_client.spublish(channel, "hello") == 1
    assert pubsub_conn.read_response() == ["smessage", channel, "hello"]


def test_an_exhausted_pool_is_recognised(redis_url):
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.05)
    held = pool.get_connection()
    try:
        with pytest.raises(redis.ConnectionError) as raised:
            redis.Redis(connection_pool=pool).publish("adapter:exhausted", "x")
        assert pool_exhausted(raised.value)
        assert not pool_exhausted(redis.ConnectionError("Connection refused."))
    finally:
        pool.release(held)
        pool.disconnect()


def test_can_read_is_still_the_method_the_pool_checks_with():
    # CheckedWithoutYielding overrides it; a renamed or reshaped method would leave the
    # override unused.
    parameters = inspect.signature(redis.Connection.can_read).parameters
    assert list(parameters) == ["self", "timeout"]
    assert parameters["timeout"].default == 0
    assert issubclass(CheckedWithoutYielding, redis.Connection)


def test_the_bounded_sentinel_pool_is_both_a_sentinel_pool_and_a_blocking_one():
    """BlockingSentinelPool combines redis-py's two pools by inheritance: this fails when
    either stops passing construction and reset on to the other."""
    sentinel = Sentinel([("127.0.0.1", 1)])  # never asked: no connection is made here
    pool = BlockingSentinelPool("m", sentinel, max_connections=2, timeout=0.05, db=3)
    assert pool.connection_class is SentinelCheckedWithoutYielding
    assert pool.connection_kwargs["connection_pool"] is pool.proxy  # Sentinel's part
    assert pool.connection_kwargs["db"] == 3
    assert pool.max_connections == 2 and pool.pool.qsize() == 2  # the blocking part
    connection = pool.make_connection()
    assert isinstance(connection, SentinelCheckedWithoutYielding)
    assert connection.connection_pool is pool.proxy
    pool.reset()
    assert pool.proxy.master_address is None and pool.pool.qsize() == 2
