"""The subscriber hub on its own: real Redis, no HTTP."""

import gevent
import pytest
import redis

from tests.support.servers import eventually, free_port


@pytest.fixture
def hub(make_hub, redis_url, redis_client):
    hub = make_hub(redis_url)
    eventually(lambda: hub.connected, message="hub connected")
    return hub


def numsub(client, channel: str) -> int:
    return dict(client.pubsub_numsub(channel))[channel]


def hub_connections(client) -> int:
    """This suite's hub connections: those on its database (other servers may share Redis)."""
    db = str(client.connection_pool.connection_kwargs.get("db", 0))
    return sum(
        1
        for c in client.client_list()
        if c.get("name") == "orderwait:hub" and str(c.get("db")) == db
    )


def test_hub_subscribes_on_first_waiter_and_unsubscribes_after_last(hub, redis_client):
    channel = "order:status:numsub-check"
    assert numsub(redis_client, channel) == 0

    first = hub.watch(channel)
    assert numsub(redis_client, channel) == 1  # watch returns once Redis confirmed
    second = hub.watch(channel)
    assert numsub(redis_client, channel) == 1  # one subscription, however many waiters
    assert hub.stats()["waiters"] == 2 and hub.stats()["channels"] == 1

    first.close()
    gevent.sleep(0.1)
    assert numsub(redis_client, channel) == 1
    second.close()
    eventually(lambda: numsub(redis_client, channel) == 0, message="unsubscribe")
    assert hub.stats()["channels"] == 0 and hub.stats()["waiters"] == 0


def test_watch_released_on_timeout_and_on_error(hub, redis_client):
    channel = "order:status:released"
    with hub.watch(channel) as watch:
        assert watch.next(0.05) is None
    eventually(lambda: numsub(redis_client, channel) == 0, message="unsubscribe on timeout")

    with pytest.raises(RuntimeError), hub.watch(channel):
        raise RuntimeError("client went away")
    eventually(lambda: numsub(redis_client, channel) == 0, message="unsubscribe on error")
    assert hub.stats()["waiters"] == 0


def test_one_publish_wakes_every_waiter_of_the_channel(hub, redis_client):
    channel = "order:status:fanout"
    watches = [hub.watch(channel) for _ in range(200)]
    woken = [gevent.spawn(w.next, 5) for w in watches]
    gevent.sleep(0.05)

    assert redis_client.publish(channel, "paid") == 1  # one subscriber: the hub
    gevent.joinall(woken, timeout=5)
    assert [g.value.data for g in woken] == ["paid"] * 200
    assert {g.value.source for g in woken} == {"redis"}
    for w in watches:
        w.close()


def test_waiter_sees_back_to_back_deliveries_in_order(hub, redis_client):
    channel = "order:status:burst"
    with hub.watch(channel) as watch:
        for n in range(5):
            redis_client.publish(channel, f"v{n}")
        seen = [watch.next(2) for _ in range(5)]
    assert [d.data for d in seen] == ["v0", "v1", "v2", "v3", "v4"]


def test_pattern_handler_receives_matching_channels(hub, redis_client):
    received = []
    handler = hub.add_handler("run:*", received.append, pattern=True)
    assert hub.stats()["patterns"] == 1 and hub.stats()["handlers"] == 1
    eventually(lambda: redis_client.pubsub_numpat() == 1, message="psubscribe")

    redis_client.publish("run:42", "started")
    redis_client.publish("other:1", "ignored")
    eventually(lambda: received, message="pattern message")
    gevent.sleep(0.05)
    assert [(d.channel, d.data) for d in received] == [("run:42", "started")]

    hub.remove_handler(handler)
    eventually(lambda: redis_client.pubsub_numpat() == 0, message="punsubscribe")
    assert hub.stats()["patterns"] == 0


def test_redis_connections_stay_constant_with_many_waiters(hub, redis_client):
    assert hub_connections(redis_client) == 1
    watches = [hub.watch(f"order:status:many-{n}") for n in range(1000)]
    assert hub.stats()["channels"] == 1000
    assert hub_connections(redis_client) == 1
    assert len(redis_client.pubsub_channels("order:status:many-*")) == 1000
    for w in watches:
        w.close()
    eventually(lambda: not redis_client.pubsub_channels("order:status:many-*"), message="unsub")


def test_hub_polls_the_database_in_one_batch_while_redis_is_down(make_hub):
    hub = make_hub(f"redis://127.0.0.1:{free_port()}/0", poll_interval=0.1)
    versions = {"a": 1, "b": 1}
    calls = []

    def poll(ids):
        calls.append(sorted(ids))
        return {i: (versions[i], f"{i}@v{versions[i]}") for i in ids if i in versions}

    hub.add_poll_source("order:status:", poll)
    eventually(lambda: hub.redis_down, message="hub notices Redis is down")

    a_waiters = [hub.watch("order:status:a") for _ in range(50)]
    b_watch = hub.watch("order:status:b")
    # The first poll of a channel delivers its state; the waiter decides it is not news.
    assert {w.next(2).data for w in a_waiters} == {"a@v1"}
    assert b_watch.next(2).data == "b@v1"

    calls.clear()
    versions["a"] = 2
    delivered = [w.next(2) for w in a_waiters]
    assert all(d is not None and d.source == "poll" for d in delivered)
    assert {d.data for d in delivered} == {"a@v2"}
    assert b_watch.next(0.35) is None, "b did not move, so its waiter is not woken"

    # One query per interval for every watched order, not one per waiter.
    assert calls and all(c == ["a", "b"] for c in calls)
    interval_count = len(calls)
    assert interval_count <= 8  # about 0.45 s of polling at 0.1 s
    for w in [*a_waiters, b_watch]:
        w.close()


def test_hub_reconnects_and_resubscribes_when_redis_returns(make_hub, private_redis):
    server = private_redis()
    port = server.port
    hub = make_hub(server.url, reconnect_max_delay=0.3)
    eventually(lambda: hub.connected, message="connected")
    watch = hub.watch("order:status:back")

    server.stop()
    eventually(lambda: not hub.connected, message="hub notices the loss")
    server = private_redis(port)
    eventually(lambda: hub.connected, timeout=5, message="reconnect")

    client = redis.Redis(port=port)
    eventually(
        lambda: dict(client.pubsub_numsub("order:status:back"))[b"order:status:back"] == 1,
        message="re-subscribed",
    )
    client.publish("order:status:back", "after")
    assert watch.next(2).data == "after"
    assert hub.stats()["reconnects"] == 1
    watch.close()
    client.close()


def test_a_poll_source_with_a_suffix_sees_only_its_own_channels(make_hub):
    """Order channels are `order:{<id>}:status`: the poll source gets the ids between its
    prefix and suffix, and nothing of channels that only share the prefix."""
    hub = make_hub(f"redis://127.0.0.1:{free_port()}/0", poll_interval=0.1)
    asked = []

    def poll(ids):
        asked.append(sorted(ids))
        return {i: (1, f"{i}@v1") for i in ids}

    hub.add_poll_source("order:{", poll, "}:status")
    eventually(lambda: hub.redis_down, message="hub notices Redis is down")
    watch = hub.watch("order:{a}:status")
    others = [hub.watch("order:{b}:latest"), hub.watch("order:{}:status")]
    assert watch.next(2).data == "a@v1"
    assert all(w.next(0.3) is None for w in others)
    assert asked and all(ids == ["a"] for ids in asked)


def test_a_watch_or_handler_that_comes_after_the_drain_hears_shutdown_at_once(hub):
    """A stopping worker may still take a request or two (those already queued on its
    listener): what they watch ends at once, as what was held when the drain ran did."""
    from app.realtime.hub import SHUTDOWN

    held = hub.watch("order:status:held-at-drain")
    hub.drain()
    assert held.next(1).source == SHUTDOWN
    held.close()

    with hub.watch("order:status:after-drain") as late:
        delivery = late.next(1)
    assert delivery is not None and delivery.source == SHUTDOWN

    heard = []
    handler = hub.add_handler("stats:after-drain", heard.append)
    eventually(lambda: heard, 1, "the handler heard the shutdown")
    assert [d.source for d in heard] == [SHUTDOWN]
    hub.remove_handler(handler)


def test_a_stats_stream_that_joins_after_the_drain_ends_at_once(hub):
    from app.admin.broadcast import StatsFeed

    class NotRead:  # the feed reads nothing before its safety interval
        def get(self, fresher_than=None):
            raise AssertionError("read")

        compute = get

    feed = StatsFeed(hub, NotRead(), safety_interval=60, db_interval=60)
    first = feed.join()
    hub.drain()
    assert first.wait(1) == (True, None)
    late = feed.join()
    assert late.wait(1) == (True, None)
    feed.leave()
    feed.leave()


def test_a_channel_subscribed_again_waits_for_its_own_confirmation_alone():
    """Confirmed channels share one event that stays set: unconfirming one channel must not
    unconfirm the others, and a waiter of the new confirmation wakes when it comes."""
    from app.realtime.hub.registry import CHANNEL, Subscription

    first, second = Subscription(CHANNEL, "first"), Subscription(CHANNEL, "second")
    first.confirm()
    second.confirm()
    first.unconfirm()
    assert not first.confirmed.is_set()
    assert second.confirmed.is_set()

    waiter = gevent.spawn(first.confirmed.wait, 5)
    gevent.sleep(0)
    first.unconfirm()  # still waiting for the same confirmation
    first.confirm()
    assert waiter.get(timeout=1) is True
    assert first.confirmed.is_set() and second.confirmed.is_set()
