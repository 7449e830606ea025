"""The admin SSE streams: statistics and service status, on the shared SSE helper."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator

from flask import current_app
from gevent.queue import Empty, Queue

from app.errors import TooManyRequests
from app.realtime import current_hub, sse
from app.realtime.connections import WORKER_ID, Connection
from app.realtime.hub import SHUTDOWN

from . import background


def open_stream(token: str) -> tuple[str, callable]:
    """Take one of the token's stream slots (429 when it has them all); returns the lease
    and the function that gives it back."""
    limiter = current_app.extensions["stream_limiter"]
    lease = limiter.acquire(token, f"{WORKER_ID}:{uuid.uuid4().hex}")
    if lease is None:
        raise TooManyRequests(
            f"at most {limiter.limit} open streams per admin token; close one and retry",
            retry_after=retry_after(),
        )
    return lease, lambda: limiter.release(token, lease)


def retry_after() -> int:
    """Seconds a refused stream should wait: one heartbeat interval. A closing client gives
    its slot back at once, so a refusal means the token's streams are open. Slots still
    come free by the heartbeat: a stream whose client left unseen ends when a heartbeat's
    write fails, a dead worker's lease lapses after three intervals. A retry each interval
    finds those soon, and retrying faster would only meet the same open streams."""
    return max(1, math.ceil(current_app.config["SSE_HEARTBEAT_INTERVAL"]))


class LeaseKeeper:
    """Renews a stream's slot at least once per heartbeat interval, however busy it is."""

    def __init__(self, token: str, lease: str):
        self._limiter = current_app.extensions["stream_limiter"]
        self._token, self._lease = token, lease
        self.interval = current_app.config["SSE_HEARTBEAT_INTERVAL"]
        self._renewed = time.monotonic()

    def renew(self) -> None:
        now = time.monotonic()
        if now - self._renewed >= self.interval:
            self._renewed = now
            self._limiter.refresh(self._token, self._lease)


def stats_frames(token: str, lease: str, last_id: int) -> callable:
    feed = current_app.extensions["admin.feed"]
    keeper = LeaseKeeper(token, lease)
    # Read before the stream starts: a database that is down is then a 503 with Retry-After,
    # not a stream that breaks before its first event.
    first = feed.current()

    def frames(connection: Connection) -> Iterator[str]:
        follower = feed.join()
        try:
            event_id = last_id + 1
            stats = first
            connection.last_status = stats["mode"]
            yield sse.event(stats, name="sync", event_id=event_id)
            while True:
                fired, stats = follower.wait(keeper.interval)
                keeper.renew()
                if not fired:
                    yield sse.HEARTBEAT
                    continue
                if stats is None:
                    return  # the worker is stopping; EventSource reconnects elsewhere
                event_id += 1
                connection.last_status = stats["mode"]
                yield sse.event(stats, name="sync", event_id=event_id)
        finally:
            feed.leave()

    return frames


def status_frames(token: str, lease: str, last_id: int) -> callable:
    hub = current_hub()
    client = current_app.extensions["redis"]
    keeper = LeaseKeeper(token, lease)

    def frames(connection: Connection) -> Iterator[str]:
        updates: Queue = Queue()
        handler = hub.add_handler(background.CHANNEL_PREFIX + "*", updates.put, pattern=True)
        try:
            event_id = last_id + 1
            services = background.all_statuses(client)
            yield sse.event({"services": services}, name="status", event_id=event_id)
            while True:
                try:
                    delivery = updates.get(timeout=keeper.interval)
                except Empty:
                    keeper.renew()
                    yield sse.HEARTBEAT
                    continue
                keeper.renew()
                if delivery.source == SHUTDOWN:
                    return
                entry = json.loads(delivery.data)
                event_id += 1
                connection.last_status = f"{entry['service']}: {entry['status']}"
                yield sse.event(
                    {"service": entry["service"], "status": entry},
                    name="service",
                    event_id=event_id,
                )
        finally:
            hub.remove_handler(handler)

    return frames
