"""The publisher on its own, against real Redis servers: what goes in a batch, in what order."""

import logging

import gevent
import pytest
import redis

from app.realtime.publish import Append, Increment, Latest, Publish, Publisher


class RecordingRedis(redis.Redis):
    """A client that notes the size of every pipeline it executes, as it starts."""

    def __init__(self, *args, log: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def recorded(*args, **kwargs):
            self.log.append(("batch", len(pipe.command_stack)))
            return execute(*args, **kwargs)

        pipe.execute = recorded
        return pipe


def recording_client(url: str, log: list) -> RecordingRedis:
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=2, decode_responses=True)
    return RecordingRedis(connection_pool=pool, log=log)


def event(key: str, n: int) -> tuple:
    """One event's operations, as an announcement sends them: a publish and a buffer append."""
    return Publish(f"{key}:channel", str(n)), Append(key, str(n), ttl=60, max_len=1000)


@pytest.fixture
def publishers():
    made = []

    def make(client, **kwargs) -> Publisher:
        publisher = Publisher(client, **kwargs)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.stop()


def test_a_send_takes_what_was_queued_before_it_in_its_batch_in_order(
    publishers, redis_url, redis_client
):
    log = []
    publisher = publishers(recording_client(redis_url, log))
    for n in range(5):
        publisher.submit(Increment("pub:counts", "queued"), Append("pub:order", str(n), 60, 100))
    assert publisher.send(Append("pub:order", "sent", 60, 100)) is True
    assert log == [("batch", 5 * 4 + 3)]
    assert redis_client.lrange("pub:order", 0, -1) == ["0", "1", "2", "3", "4", "sent"]
    assert redis_client.hget("pub:counts", "queued") == "5"


def test_events_sent_while_a_batch_is_in_flight_go_next_in_one_batch(publishers, private_redis):
    server = private_redis()
    log = []
    publisher = publishers(recording_client(server.url, log), wait_timeout=5)
    server.freeze()  # the first batch stays in flight until the thaw
    try:
        first = gevent.spawn(publisher.send, *event("pub:burst", 0))
        gevent.sleep(0.05)
        rest = [gevent.spawn(publisher.send, *event("pub:burst", n)) for n in range(1, 10)]
        gevent.sleep(0.05)
        assert log == [("batch", 4)]
    finally:
        server.thaw()
    assert first.get(timeout=5) is True
    assert [g.get(timeout=5) for g in rest] == [True] * 9
    assert log == [("batch", 4), ("batch", 9 * 4)]
    check = redis.Redis.from_url(server.url, decode_responses=True)
    assert check.lrange("pub:burst", 0, -1) == [str(n) for n in range(10)]


# What a log line shows of an operation: never its value, an order's JSON with its customer.
CUSTOMER_JSON = '{"customer":{"email":"nyokabi@example.org","firstName":"Nyokabi"}}'


def test_operations_describe_themselves_without_their_values():
    operations = [
        Publish("order:{7}:status", CUSTOMER_JSON),
        Latest("order:{7}:latest", 60, CUSTOMER_JSON),
        Append("order:{7}:updates", CUSTOMER_JSON, 60, 50),
        Increment("admin:stats:webhooks", "received"),
    ]
    assert [operation.describe() for operation in operations] == [
        "PUBLISH order:{7}:status",
        "SET order:{7}:latest",
        "RPUSH order:{7}:updates",
        "HINCRBY admin:stats:webhooks received",
    ]


def test_a_publish_redis_does_not_confirm_is_logged_by_its_channel(
    publishers, private_redis, caplog
):
    server = private_redis()
    client = redis.Redis.from_url(server.url, socket_timeout=1)
    publisher = publishers(client, wait_timeout=0.2)
    server.freeze()
    try:
        with caplog.at_level(logging.WARNING, "app.realtime.publish"):
            assert publisher.send(Publish("order:{7}:status", CUSTOMER_JSON)) is False
    finally:
        server.thaw()
    [line] = [r.getMessage() for r in caplog.records]
    assert line == "Redis did not confirm PUBLISH order:{7}:status within 0.2s"


def test_a_failed_batch_is_logged_without_the_values_redis_py_adds_to_its_error(
    publishers, redis_url, redis_client, caplog
):
    redis_client.set("pub:taken", "a string")  # an RPUSH on it fails: WRONGTYPE
    publisher = publishers(redis.Redis.from_url(redis_url))
    with caplog.at_level(logging.WARNING, "app.realtime.publish"):
        assert publisher.send(Append("pub:taken", CUSTOMER_JSON, 60, 50)) is False
    [failed] = caplog.records
    assert "WRONGTYPE" in failed.getMessage()
    assert "Nyokabi" not in failed.getMessage() and "pipeline" not in failed.getMessage()
    assert failed.fields["first"] == "RPUSH pub:taken"
