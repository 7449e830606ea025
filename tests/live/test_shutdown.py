"""Graceful shutdown: SIGTERM answers held waits and ends streams at once, then the worker
exits well inside graceful_timeout. A live gunicorn server; no client gets a reset."""

import signal
import time

import gevent
import gevent.socket
import redis

from tests.conftest import REDIS_URL
from tests.support import servers
from tests.support.live import create, parked, pay, wait
from tests.support.sse import SseStream

ADMIN = "admin-shutdown"


HELD = 100
SPREAD_MS = 2000


def test_sigterm_answers_held_waits_and_ends_streams(live_server, redis_client):
    server = live_server(
        ADMIN_TOKENS=ADMIN, SSE_HEARTBEAT_INTERVAL=1, SHUTDOWN_RECONNECT_WINDOW_MS=SPREAD_MS
    )
    orders = [create(server) for _ in range(HELD)]
    waits = [gevent.spawn(wait, server, order, timeout_ms=20_000) for order in orders]
    servers.eventually(lambda: parked(server) == HELD, 10, f"{HELD} waits held")
    streamed = create(server)
    order_stream = SseStream(
        f"{server.url}/api/orders/{streamed['orderId']}/events",
        headers={"Authorization": f"Bearer {streamed['accessToken']}"},
    )
    stats_stream = SseStream(
        f"{server.url}/api/admin/stats/stream", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    try:
        assert order_stream.next_event(5).id == "1"
        assert stats_stream.next_event(5).event == "sync"
        leases = redis.Redis.from_url(REDIS_URL).keys("service:leader:*")
        assert leases, "the background services hold their leases"

        terminated_at = time.monotonic()
        exited_in = gevent.spawn(server.terminate)
        # wait() raises on a reset or refused connection: every one got an HTTP answer.
        answers = [w.get(timeout=5) for w in waits]
        answered_in = time.monotonic() - terminated_at
        for order, answer in zip(orders, answers, strict=True):
            assert answer.status_code == 200
            body = answer.json()
            assert body["orderId"] == order["orderId"]
            assert body["changed"] is False and body["source"] == "shutdown"
        assert answered_in < 3.0
        # Each is told when to come back, drawn over the window: not all at once.
        delays = [answer.json()["retryInMs"] for answer in answers]
        assert all(0 <= delay <= SPREAD_MS for delay in delays)
        assert len(set(delays)) > HELD // 2 and max(delays) - min(delays) > SPREAD_MS / 2

        # Both streams end cleanly (no error): EventSource reconnects elsewhere, after the
        # delay the order stream names last.
        rest = order_stream.rest(5)
        assert [f for f in rest if f.is_event] == []
        assert [f for f in rest if f.retry is not None]
        assert 0 <= int(rest[-1].retry) <= SPREAD_MS
        assert order_stream.error is None
        assert [f for f in stats_stream.rest(5) if f.is_event] == []
        assert stats_stream.error is None

        assert exited_in.get(timeout=30) < 10.0  # graceful_timeout is 30 s
        assert redis.Redis.from_url(REDIS_URL).keys("service:leader:*") == []
    finally:
        order_stream.close()
        stats_stream.close()


def test_hup_reload_answers_held_waits_and_the_new_worker_serves(live_server, redis_client):
    """gunicorn's HUP starts new workers and stops the old ones with SIGTERM: the held waits
    are answered at once, and a wait asked again is held by the new worker and woken."""
    server = live_server()
    orders = [create(server) for _ in range(20)]
    waits = [gevent.spawn(wait, server, order, timeout_ms=20_000) for order in orders]
    servers.eventually(lambda: parked(server) == 20, 10, "20 waits held")

    reloaded_at = time.monotonic()
    server.proc.send_signal(signal.SIGHUP)
    answers = [w.get(timeout=10) for w in waits]
    assert time.monotonic() - reloaded_at < 5.0
    assert {(a.status_code, a.json()["source"]) for a in answers} == {(200, "shutdown")}

    def wait_like_the_page():
        # An old worker accepts for up to a second more and answers "shutdown" at once.
        for _ in range(50):
            answer = wait(server, orders[0], timeout_ms=20_000)
            if answer.json()["source"] != "shutdown":
                return answer
            gevent.sleep(0.1)
        raise AssertionError("no live worker held the wait")

    again = gevent.spawn(wait_like_the_page)
    servers.eventually(lambda: parked(server) == 1, 15, "the wait held by the new worker")
    assert pay(server, orders[0]).status_code == 200
    answer = again.get(timeout=10).json()
    assert (answer["source"], answer["paymentStatus"]) == ("redis", "completed")
    assert server.proc.poll() is None  # the master lives on


def _ask_until_refused(port: int, deadline: float) -> tuple[int, list[str]]:
    """Ask for /healthz on new connections until the server refuses one; count the answers,
    and describe each connection that was accepted and then cut without an answer."""
    answered, cut = 0, []
    request = b"GET /healthz HTTP/1.1\r\nHost: shutdown\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        try:
            conn = gevent.socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            return answered, cut
        try:
            conn.sendall(request)
            head = conn.recv(64)
        except OSError as exc:
            cut.append(repr(exc))
            continue
        finally:
            conn.close()
        if head.startswith(b"HTTP/1.1 "):
            answered += 1
        else:
            cut.append(repr(head))
    raise AssertionError(f"still accepting after SIGTERM; cut: {cut}")


def test_a_stopping_worker_answers_every_connection_it_accepted(live_server, redis_client):
    """The listener closes before the held waits are answered, and what the kernel had
    already queued on it is served: a new connection is answered or refused (which a proxy
    retries elsewhere, even a POST), never accepted and then reset. Clients answered by the
    drain come straight back; a listener still open then queues them, and closing it later
    resets them all."""
    server = live_server()
    orders = [create(server) for _ in range(HELD)]
    waits = [gevent.spawn(wait, server, order, timeout_ms=20_000) for order in orders]
    servers.eventually(lambda: parked(server) == HELD, 10, f"{HELD} waits held")

    deadline = time.monotonic() + 10
    askers = [gevent.spawn(_ask_until_refused, server.port, deadline) for _ in range(16)]
    gevent.sleep(0.2)  # the askers are being answered
    exited_in = gevent.spawn(server.terminate)
    results = [asker.get(timeout=15) for asker in askers]
    assert [w.get(timeout=5).status_code for w in waits] == [200] * HELD
    assert sum(answered for answered, _ in results) > 0
    assert [cut for _, cut in results if cut] == []
    assert exited_in.get(timeout=30) < 10.0
