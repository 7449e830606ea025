"""The hub's reader is woken first on the pass that sees its socket readable.

Under a burst of webhooks every pass of gevent's loop wakes many greenlets at once; the
delivery they caused must not wait behind all of them for the next pass.
"""

import socket

import gevent
import redis
from gevent import monkey

from app.realtime.redis_adapter import CheckedWithoutYielding, FrameWaiter, connection_class_for

blocking_sleep = monkey.get_original("time", "sleep")
blocking_socket = monkey.get_original("socket", "socket")

CHANNEL = "readiness:test"


def subscribed(redis_url: str) -> redis.Connection:
    # RESP2, as the hub: pub/sub frames come back from read_response.
    pool = redis.ConnectionPool.from_url(redis_url, decode_responses=True, protocol=2)
    conn = redis.Connection(**pool.connection_kwargs)
    conn.connect()
    conn.send_command("SUBSCRIBE", CHANNEL)
    assert conn.read_response()[0] == "subscribe"
    return conn


def publish_blocking(redis_url: str, message: str) -> None:
    """PUBLISH over a socket gevent does not know: the loop does not run meanwhile."""
    kwargs = redis.ConnectionPool.from_url(redis_url).connection_kwargs
    sock = blocking_socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.connect((kwargs["host"], kwargs["port"]))
        command = [f"SELECT {kwargs.get('db', 0)}", f"PUBLISH {CHANNEL} {message}"]
        sock.sendall("".join(c + "\r\n" for c in command).encode())
        replies = b""
        while replies.count(b"\r\n") < 2:
            replies += sock.recv(64)
        assert replies.startswith(b"+OK\r\n:1\r\n"), replies  # one subscriber: ours
    finally:
        sock.close()


def test_reader_runs_before_others_woken_in_the_same_pass(redis_url):
    conn = subscribed(redis_url)
    frames = FrameWaiter(conn)
    pairs = [socket.socketpair() for _ in range(5)]
    order = []

    def other(i, sock):
        sock.recv(1)
        order.append(f"other{i}")

    def reader():
        assert frames.wait(5.0)
        order.append("reader")
        assert conn.read_response()[:3] == ["message", CHANNEL, "hello"]

    try:
        assert frames.prioritized, "redis-py's parser no longer exposes hiredis's reader"
        greenlets = [gevent.spawn(other, i, b) for i, (_, b) in enumerate(pairs)]
        greenlets.append(gevent.spawn(reader))
        gevent.sleep(0.05)  # every greenlet blocked on its socket
        assert order == []
        # Everything becomes readable while the loop is not running, so one pass sees it all.
        for a, _ in pairs:
            a.send(b"x")
        publish_blocking(redis_url, "hello")
        blocking_sleep(0.05)
        gevent.joinall(greenlets, timeout=5, raise_error=True)
        assert sorted(order) == sorted(["reader"] + [f"other{i}" for i in range(5)])
        assert order[0] == "reader", order
    finally:
        frames.close()
        conn.disconnect()
        for a, b in pairs:
            a.close()
            b.close()


def test_frames_read_together_are_ready_without_touching_the_socket(redis_url):
    conn = subscribed(redis_url)
    frames = FrameWaiter(conn)
    try:
        publish_blocking(redis_url, "one")
        publish_blocking(redis_url, "two")
        blocking_sleep(0.05)
        assert frames.wait(1.0)
        assert conn.read_response()[2] == "one"  # one recv took both frames
        assert frames.wait(0.5)  # the second from the parser's buffer
        assert conn.read_response()[2] == "two"
        assert not frames.wait(0.1)  # nothing more: the timeout, not a hang
    finally:
        frames.close()
        conn.disconnect()


def command_pool(redis_url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(
        redis_url, decode_responses=True, connection_class=CheckedWithoutYielding
    )


def test_a_checkout_from_the_pool_does_not_yield_to_other_greenlets(redis_url):
    pool = command_pool(redis_url)
    client = redis.Redis(connection_pool=pool)
    try:
        assert client.ping()  # one connection made and back in the pool
        ran = []
        gevent.spawn(ran.append, "other")
        conn = pool.get_connection()
        assert ran == [], "the checkout's check for leftover data went through the loop"
        pool.release(conn)
        gevent.sleep(0)
        assert ran == ["other"]
    finally:
        pool.disconnect()


def test_a_reply_left_unread_is_still_seen(redis_url):
    pool = command_pool(redis_url)
    conn = pool.get_connection()
    try:
        assert conn.can_read() is False
        conn.send_command("PING")
        blocking_sleep(0.05)  # the reply is on the socket, unread
        assert conn.can_read() is True
        assert conn.read_response() == "PONG"
        assert conn.can_read() is False
        pool.release(conn)
    finally:
        pool.disconnect()


def test_only_plain_tcp_urls_get_the_connection_class():
    assert connection_class_for("redis://127.0.0.1:6379/0") is CheckedWithoutYielding
    assert connection_class_for("rediss://example.com:6380/0") is None
    assert connection_class_for("unix:///run/redis.sock") is None
