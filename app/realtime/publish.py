"""Publishing after commit: one Redis pipeline per event, never failing the caller."""

import logging
from typing import NamedTuple

import redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Latest(NamedTuple):
    """The cached latest state of a subject: SETEX key ttl value (as SET key value EX ttl)."""

    key: str
    ttl: int
    value: str


class Buffer(NamedTuple):
    """The replay buffer of a subject: RPUSH, EXPIRE ttl, LTRIM to the newest `max_len`."""

    key: str
    ttl: int
    max_len: int


def publish_event(
    client: redis.Redis, channel: str, message: str, *, latest: Latest, buffer: Buffer
) -> bool:
    """Publish, cache and buffer one event in a single round trip.

    Returns False when Redis failed; the caller has already committed, so the database stays
    the truth and waiters catch up through the hub's database poll.
    """
    pipe = client.pipeline(transaction=False)
    pipe.publish(channel, message)
    pipe.set(latest.key, latest.value, ex=latest.ttl)  # SETEX, in its non-deprecated form
    pipe.rpush(buffer.key, message)
    pipe.expire(buffer.key, buffer.ttl)
    pipe.ltrim(buffer.key, -buffer.max_len, -1)
    try:
        pipe.execute()
    except RedisError as exc:
        log.warning("publish on %s failed, waiters will read the database: %s", channel, exc)
        return False
    return True
