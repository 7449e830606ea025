"""The publisher on its own, against real Redis servers: what goes in a batch, in what order."""

import gevent
import pytest
import redis

from app.realtime.publish import Append, Increment, Publish, Publisher


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
