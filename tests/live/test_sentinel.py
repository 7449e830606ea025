"""Redis behind Sentinel, on a real setup (a primary, a replica, three sentinels on loopback):
the service finds the primary through the sentinels and follows a failover without a
restart, losing no wait."""

import time

import gevent
import pytest
import requests

from tests.support.live import create, pay
from tests.support.live import wait as wait_live
from tests.support.sentinel import MASTER_NAME, SentinelSetup
from tests.support.servers import eventually

WAITS = 60


@pytest.fixture
def sentinels():
    setup = SentinelSetup()
    yield setup
    setup.stop()


def hub(server) -> dict:
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]


def start(live_server, sentinels):
    return live_server(
        # Under Sentinel the URL gives only the database number: its host is never asked.
        REDIS_URL="redis://sentinel-managed/0",
        REDIS_SENTINELS=sentinels.addresses,
        REDIS_SENTINEL_MASTER=MASTER_NAME,
    )


def test_the_service_runs_on_the_primary_sentinel_names(live_server, sentinels):
    server = start(live_server, sentinels)
    eventually(lambda: hub(server)["connected"], 10, "the hub on pub/sub")
    assert hub(server)["primary"] == f"127.0.0.1:{sentinels.primary.port}"
    order = create(server)
    held = gevent.spawn(wait_live, server, order)
    eventually(lambda: hub(server)["parked"] == 1, 10, "a wait held")
    assert pay(server, order).status_code == 200
    answer = held.get(timeout=10).json()
    assert (answer["changed"], answer["paymentStatus"], answer["source"]) == (
        True,
        "completed",
        "redis",
    )


def test_a_primary_killed_under_held_waits_is_followed_and_no_wait_is_lost(live_server, sentinels):
    server = start(live_server, sentinels)
    eventually(lambda: hub(server)["connected"], 10, "the hub on pub/sub")
    orders = [create(server) for _ in range(WAITS)]
    waits = [gevent.spawn(wait_live, server, order, timeout_ms=30_000) for order in orders]
    eventually(lambda: hub(server)["parked"] == WAITS, 15, f"{WAITS} waits held")

    sentinels.primary.stop()  # kill -9
    killed = time.monotonic()
    # Paid while no primary is known: the database is the truth, the hub polls it.
    during, after = orders[: WAITS // 2], orders[WAITS // 2 :]
    payments = [gevent.spawn(pay, server, order) for order in during]
    gevent.joinall(payments, timeout=20, raise_error=True)
    assert [p.value.status_code for p in payments] == [200] * len(during)

    new_primary = f"127.0.0.1:{sentinels.replica.port}"
    eventually(lambda: sentinels.master_port() == sentinels.replica.port, 20, "a promotion")
    promoted = time.monotonic()
    eventually(
        lambda: (lambda h: h["connected"] and h["primary"] == new_primary)(hub(server)),
        15,
        "the hub on the new primary",
    )
    back_on_pubsub = time.monotonic()
    for order in after:
        assert pay(server, order).status_code == 200
    gevent.joinall(waits, timeout=15)
    delivered = time.monotonic()

    answers = [w.value.json() if w.ready() and w.value is not None else None for w in waits]
    lost = [o["orderId"] for o, a in zip(orders, answers, strict=True) if a is None]
    assert not lost, f"{len(lost)} waits never answered"
    for order, answer in zip(orders, answers, strict=True):
        assert answer["orderId"] == order["orderId"]
        assert (answer["changed"], answer["paymentStatus"]) == (True, "completed")
    # Those paid after the failover were told by pub/sub on the new primary.
    assert {a["source"] for a in answers[WAITS // 2 :]} == {"redis"}
    stats = hub(server)
    assert stats["primaryChanges"] == 1
    print(
        f"\nSentinel failover, {WAITS} held waits: promoted {promoted - killed:.2f} s after "
        f"the kill; hub on the new primary {back_on_pubsub - promoted:.2f} s after the "
        f"promotion; last answer {delivered - back_on_pubsub:.2f} s after that; waits lost 0"
    )
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert "orderwait_redis_primary_changes_total 1.0" in metrics


def test_a_planned_failover_moves_the_hub_to_the_new_primary_with_no_wait_lost(
    live_server, sentinels
):
    """SENTINEL FAILOVER: the old primary lives on as a replica. The hub must not stay
    subscribed there unknowingly: it ends on the new primary, and waits are answered."""
    server = start(live_server, sentinels)
    eventually(lambda: hub(server)["connected"], 10, "the hub on pub/sub")
    orders = [create(server) for _ in range(10)]
    waits = [gevent.spawn(wait_live, server, order, timeout_ms=30_000) for order in orders]
    eventually(lambda: hub(server)["parked"] == len(orders), 15, "waits held")

    assert sentinels.sentinels[0].client().sentinel_failover(MASTER_NAME)
    eventually(lambda: sentinels.master_port() == sentinels.replica.port, 20, "the switch")
    new_primary = f"127.0.0.1:{sentinels.replica.port}"
    eventually(
        lambda: (lambda h: h["connected"] and h["primary"] == new_primary)(hub(server)),
        15,
        "the hub on the new primary",
    )
    for order in orders:
        assert pay(server, order).status_code == 200
    gevent.joinall(waits, timeout=15)
    for order, held in zip(orders, waits, strict=True):
        assert held.ready() and held.value is not None, "a wait was never answered"
        answer = held.value.json()
        assert answer["orderId"] == order["orderId"]
        assert (answer["changed"], answer["paymentStatus"]) == (True, "completed")
    assert hub(server)["primaryChanges"] == 1
