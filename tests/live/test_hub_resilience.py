"""The hub keeps its one connection working through bad payloads, failed writes and waiters
killed mid-registration. Real Redis (private redis-servers where one must die)."""

import os
import signal
import time
import uuid

import gevent
import redis

from app.realtime.hub import Hub
from tests.support.servers import eventually


def reader_state(hub: Hub) -> str:
    return "; ".join(
        f"reader of {name}: dead={reader.dead} exception={reader.exception!r}"
        for name, reader in hub._links._readers.items()
    )


# A payload that is not UTF-8 must not break the connection every waiter shares.
def test_hub_reader_survives_a_message_that_is_not_utf8(make_hub, redis_url):
    hub = make_hub(redis_url, wait_connected=True)
    channel = f"order:status:resilience-{uuid.uuid4()}"
    publisher = redis.Redis.from_url(redis_url)
    with hub.watch(channel) as watch:
        assert publisher.publish(channel, b"\xff\xfe not utf-8") == 1
        gevent.sleep(0.3)
        assert publisher.publish(channel, b'{"version": 2}') in (0, 1)
        delivery = watch.next(3)
        assert delivery is not None, (
            f"the next valid publish was never delivered; {reader_state(hub)}; "
            f"connected={hub.connected}"
        )
    publisher.close()


# A write that fails before the reader sees Redis die must still end in a reconnect.
def test_hub_recovers_when_a_write_fails_before_the_reader_sees_redis_die(make_hub, private_redis):
    server = private_redis()
    port = server.port
    hub = make_hub(server.url, wait_connected=True)
    watches = [hub.watch(f"order:status:resilience-{n}") for n in range(10)]
    survivor = hub.watch("order:status:resilience-survivor")
    assert hub.connected

    # Redis dies; before this greenlet yields, two waits end (UNSUBSCRIBE each): the first
    # write lands in a socket the peer already closed, a later one fails with EPIPE.
    os.kill(server.proc.pid, signal.SIGKILL)
    spin_until = time.monotonic() + 0.2  # no yield: let the kernel see the peer close
    while time.monotonic() < spin_until:
        pass
    closed = 0
    while hub.connected and closed < len(watches):
        watches[closed].close()
        closed += 1
    assert not hub.connected, "precondition: a hub write failed"
    server.proc.wait(5)

    gevent.sleep(0.5)
    private_redis(port)  # Redis is back on the same port
    client = redis.Redis(port=port)
    try:
        eventually(
            lambda: hub.connected,
            10,
            f"the hub to reconnect after Redis came back ({reader_state(hub)})",
        )
    finally:
        for watch in watches[closed:]:
            watch.close()
    eventually(
        lambda: (
            dict(client.pubsub_numsub("order:status:resilience-survivor"))[
                b"order:status:resilience-survivor"
            ]
            == 1
        ),
        5,
        "re-subscribed",
    )
    client.publish("order:status:resilience-survivor", "after")
    assert survivor.next(2).data == "after"
    survivor.close()
    client.close()


# A waiter killed while it registers leaves no waiter and no subscription behind.
def test_watch_killed_while_awaiting_confirmation_leaks_no_waiter(make_hub, private_redis):
    server = private_redis()
    hub = make_hub(server.url, wait_connected=True)
    channel = "order:status:resilience-killed"

    server.proc.send_signal(signal.SIGSTOP)  # Redis answers nothing for a moment
    try:
        registering = gevent.spawn(hub.watch, channel)
        gevent.sleep(0.2)
        assert not registering.ready(), "precondition: watch() is waiting for Redis"
        registering.kill()  # the request greenlet is killed (shutdown, gevent.Timeout, ...)
        assert isinstance(registering.value, gevent.GreenletExit)
    finally:
        server.proc.send_signal(signal.SIGCONT)

    eventually(
        lambda: hub.stats()["waiters"] == 0 and hub.stats()["channels"] == 0,
        3,
        f"the killed waiter to be released (stats {hub.stats()})",
    )
