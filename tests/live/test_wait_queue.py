"""Waits that find every turn to open one taken queue by their socket (app/realtime/turns.py).

A live gunicorn server with one turn (WAITS_OPENING_AT_ONCE=1), its database behind a proxy
that the test pauses: the first wait holds the turn, stalled on its database read, and every
wait after it queues, deterministically. Real PostgreSQL and Redis behind it.
"""

import errno
import os
import time
import uuid

import gevent
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import server
from tests.support import servers
from tests.support.helpers import auth, create_order
from tests.support.live import create, parked, pay


@pytest.fixture
def one_turn(live_server, pg_url, db_proxy):
    """A server opening one wait at a time, its database reachable only through `db_proxy`."""
    proxied = pg_url.replace(":5432/", f":{db_proxy.port}/")
    return live_server(DATABASE_URL=proxied, WAITS_OPENING_AT_ONCE=1)


def queued(server) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "orderwait_waits_queued_total":
                return sample.value
    return 0.0


def get_wait(server, order: dict, token: str | None = None, **params) -> requests.Response:
    headers = {} if token == "" else {"Authorization": f"Bearer {token or order['accessToken']}"}
    return requests.get(
        f"{server.url}/api/orders/{order['orderId']}/wait",
        params={"timeout": 20_000, "since": 1, **params},
        headers=headers,
        timeout=30,
    )


def hold_the_turn(server, db_proxy) -> tuple[dict, list[gevent.Greenlet]]:
    """Stall the database and send a wait that takes the one turn and stalls on its read,
    and a second one, on the same order, that queues behind it. Returns both, and the
    order."""
    blocker = create(server)
    before = queued(server)
    db_proxy.pause()
    holding = gevent.spawn(get_wait, server, blocker)
    # Once a second wait has queued, the turn is certainly taken.
    behind = gevent.spawn(get_wait, server, blocker)
    servers.eventually(lambda: queued(server) == before + 1, 5, "a wait queued")
    return blocker, [holding, behind]


def queue_waits(server, orders: list[dict]) -> list[gevent.Greenlet]:
    """A wait on each order, sent once the turn is held: each one queues."""
    before = queued(server)
    waits = [gevent.spawn(get_wait, server, order) for order in orders]
    servers.eventually(lambda: queued(server) == before + len(orders), 5, "the waits queued")
    assert not any(w.ready() for w in waits)
    return waits


def test_a_burst_queued_for_the_turn_is_parked_and_answered_by_its_webhooks(one_turn, db_proxy):
    server = one_turn
    orders = [create(server) for _ in range(20)]
    blocker, first = hold_the_turn(server, db_proxy)
    waits = queue_waits(server, orders)
    db_proxy.resume()
    servers.eventually(lambda: parked(server) == 22, 10, "every wait opened and parked")

    for order in [*orders, blocker]:
        assert pay(server, order).status_code == 200
    answers = [w.get(timeout=10) for w in [*waits, *first]]
    for order, answer in zip([*orders, blocker, blocker], answers, strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["orderId"] == order["orderId"]
        assert body["changed"] is True and body["paymentStatus"] == "completed"
        assert body["source"] == "redis"
    assert answers[0].headers["Content-Type"] == "application/json"
    assert answers[0].headers["X-Content-Type-Options"] == "nosniff"
    assert "gunicorn problems" not in server.output()
    assert "Traceback" not in server.output()


def test_a_queued_wait_for_a_settled_order_is_answered_once_it_has_its_turn(one_turn, db_proxy):
    server = one_turn
    paid = [create(server) for _ in range(5)]
    for order in paid:
        assert pay(server, order).status_code == 200
    _, first = hold_the_turn(server, db_proxy)
    waits = [gevent.spawn(get_wait, server, order) for order in paid]
    gevent.sleep(0.3)
    assert all(not w.ready() for w in waits)  # no turn yet
    db_proxy.resume()
    for order, answer in zip(paid, [w.get(timeout=10) for w in waits], strict=True):
        assert answer.status_code == 200
        body = answer.json()
        assert body["orderId"] == order["orderId"] and body["changed"] is True
        assert body["source"] == "cache"  # the cached state answered: no database read
    gevent.killall(first)


def test_a_queued_wait_answers_errors_as_a_wait_that_did_not_queue(one_turn, db_proxy):
    server = one_turn
    order = create(server)
    requests_of = {
        # Told by the request alone: answered at once, queue or not.
        "bad timeout": (order, None, {"timeout": "soon"}),
        "no token": (order, "", {}),
        "malformed id": ({**order, "orderId": "0" * 32}, None, {}),
        # Told by the cached state or the database: they queue for a turn.
        "wrong token": ({**order, "accessToken": "not-the-token"}, None, {}),
        "unknown order": ({**order, "orderId": str(uuid.uuid4())}, None, {}),
    }
    direct = {what: get_wait(server, o, t, **p) for what, (o, t, p) in requests_of.items()}
    assert [a.status_code for a in direct.values()] == [400, 401, 404, 404, 404]

    _, first = hold_the_turn(server, db_proxy)
    try:
        before = queued(server)
        at_once = {}
        for what in ("bad timeout", "no token", "malformed id"):
            o, t, p = requests_of[what]
            started = time.monotonic()
            at_once[what] = get_wait(server, o, t, **p)
            assert time.monotonic() - started < 1.0, what
        pending = {
            what: gevent.spawn(get_wait, server, *requests_of[what][:2], **requests_of[what][2])
            for what in ("wrong token", "unknown order")
        }
        servers.eventually(lambda: queued(server) == before + 2, 5, "two queued")
    finally:
        db_proxy.resume()
    answers = {**at_once, **{what: g.get(timeout=10) for what, g in pending.items()}}
    for what, answer in answers.items():
        expected = direct[what]
        assert answer.status_code == expected.status_code, what
        assert answer.json() == expected.json(), what
        for header in ("Content-Type", "Content-Length", "X-Content-Type-Options"):
            assert answer.headers[header] == expected.headers[header], (what, header)
    gevent.killall(first)


def test_a_queued_wait_times_out_counting_from_its_arrival(one_turn, db_proxy):
    server = one_turn
    order = create(server)
    _, first = hold_the_turn(server, db_proxy)
    sent = time.monotonic()
    waiting = gevent.spawn(get_wait, server, order, timeout=1000)
    gevent.sleep(1.5)  # past its timeout, still queued
    db_proxy.resume()
    answer = waiting.get(timeout=10)
    elapsed = time.monotonic() - sent
    assert answer.status_code == 200
    assert answer.json()["changed"] is False and answer.json()["source"] == "timeout"
    # Counted from its turn, it would have waited another second.
    assert elapsed < 2.3
    gevent.killall(first)


def test_sigterm_answers_the_queued_waits_before_the_worker_exits(one_turn, db_proxy):
    server = one_turn
    orders = [create(server) for _ in range(10)]
    _, first = hold_the_turn(server, db_proxy)
    waits = queue_waits(server, orders)
    exited_in = gevent.spawn(server.terminate)
    gevent.sleep(0.3)
    db_proxy.resume()
    # get_wait raises on a reset or refused connection: every one got an HTTP answer.
    for order, answer in zip(orders, [w.get(timeout=15) for w in waits], strict=True):
        assert answer.status_code == 200
        body = answer.json()
        assert body["orderId"] == order["orderId"] and body["source"] == "shutdown"
    assert exited_in.get(timeout=30) < 10.0


class NoDescriptorLeft:
    """The server's socket of a request, in a worker at its open-files limit: a copy of it
    (gevent's dup, or os.dup of its descriptor) fails as the kernel fails it."""

    FILENO = 1_000_000  # no descriptor of this process

    def dup(self):
        raise OSError(errno.EMFILE, "Too many open files")

    def fileno(self):
        return self.FILENO


@pytest.fixture
def no_descriptor_left(monkeypatch):
    real_dup = os.dup

    def dup(fd):
        if fd == NoDescriptorLeft.FILENO:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    monkeypatch.setattr(os, "dup", dup)
    return NoDescriptorLeft()


@pytest.mark.parametrize("queueing", [False, True])
def test_a_worker_out_of_file_descriptors_answers_503_and_holds_nothing(
    make_app, queueing, no_descriptor_left
):
    app = make_app(WAITS_OPENING_AT_ONCE=1, WAITS_PER_CLIENT=1)
    client = app.test_client()
    order = create_order(client)
    longpolls = app.extensions["longpolls"]
    turns = longpolls.queue.turns
    if queueing:
        turns.acquire()  # every turn taken: the wait would queue
    try:
        with server.serving(no_descriptor_left):  # as the worker lends its socket
            answer = client.get(
                f"/api/orders/{order['orderId']}/wait?timeout=5000&since=1", headers=auth(order)
            )
    finally:
        if queueing:
            turns.release()
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "too many connections held, retry shortly"
    assert answer.headers["Retry-After"] == "5"
    assert len(longpolls.queue) == 0
    assert app.extensions["hub"].stats()["waiters"] == 0
    assert not turns.locked()
    # Nothing of it is held: the client's one wait slot is free, so the next wait is served.
    again = client.get(
        f"/api/orders/{order['orderId']}/wait?timeout=0&since=1", headers=auth(order)
    )
    assert again.status_code == 200 and again.get_json()["source"] == "timeout"
