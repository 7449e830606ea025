"""What the hub is subscribed to, and who listens there: waiters (Watch) and handlers.

A channel or pattern is subscribed on its first user and unsubscribed after its last, so
Redis connections stay constant whatever the number of waiters. Every waiter of a channel
shares one wake-up object, so a publish costs one event set, not one per waiter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from gevent.event import Event

from ..signals import Broadcast

log = logging.getLogger(__package__)

CHANNEL = "channel"
PATTERN = "pattern"
SHARD = "shard"  # a sharded channel (Redis 7: SSUBSCRIBE / SPUBLISH)
SUBSCRIBE = {CHANNEL: "SUBSCRIBE", PATTERN: "PSUBSCRIBE", SHARD: "SSUBSCRIBE"}
UNSUBSCRIBE = {CHANNEL: "UNSUBSCRIBE", PATTERN: "PUNSUBSCRIBE", SHARD: "SUNSUBSCRIBE"}

SHUTDOWN = "shutdown"


class Delivery(NamedTuple):
    channel: str
    data: str
    # "redis" (pub/sub), "poll" (database poll while Redis is away) or SHUTDOWN (the worker
    # is stopping: stop waiting, answer with what you have)
    source: str
    received: float  # time.monotonic() when the hub got it: every waiter's delivery latency


_CONFIRMED = Event()  # shared by every confirmed subscription; never cleared
_CONFIRMED.set()


class Subscription:
    __slots__ = ("kind", "name", "waiters", "handlers", "broadcast", "confirmed", "polled_version")

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name
        self.waiters = 0
        # A tuple, replaced on change: handlers change once per parked channel, and a
        # delivery reads them as they were.
        self.handlers: tuple[Callable[[Delivery], None], ...] = ()
        # One wake-up for every waiter of the channel, while it has any: the channels of
        # parked requests (handlers only) are held by the thousand.
        self.broadcast: Broadcast | None = None
        self.confirmed = Event()  # set when Redis acknowledged the SUBSCRIBE
        self.polled_version: int | None = None

    def confirm(self) -> None:
        """Redis acknowledged the SUBSCRIBE. Once its waiters are woken, the channel shares
        one event that stays set: the channels of held waits are confirmed by the thousand."""
        self.confirmed.set()
        self.confirmed = _CONFIRMED

    def unconfirm(self) -> None:
        """To be subscribed again: waiters of the confirmation wait from here on."""
        if self.confirmed is _CONFIRMED:
            self.confirmed = Event()
        else:
            self.confirmed.clear()


class Handler(NamedTuple):
    subscription: Subscription
    callback: Callable[[Delivery], None]


class Subscriptions(dict[tuple[str, str], Subscription]):
    """Every subscription by (kind, name), and the waiters' counts.

    A dict itself, so the reader's lookup per frame is a plain dict lookup. `unsubscribe`
    is called with a subscription its last user just left.
    """

    def __init__(self, unsubscribe: Callable[[Subscription], None]):
        super().__init__()
        self._unsubscribe = unsubscribe
        self.waiters = 0  # registered waiters, and requests held by a parking lot
        self.parked = 0  # waiters blocked in Watch.next, or parked in a lot, right now

    def names(self, kind: str) -> list[str]:
        return [name for k, name in self if k == kind]

    def add_waiter(self, kind: str, name: str) -> tuple[Subscription, bool]:
        """Count a new waiter in; the subscription, and whether it was just created (the
        caller then sends SUBSCRIBE, after the waiter counts, so an interruption unwinds)."""
        sub, created = self._register(kind, name)
        if sub.broadcast is None:
            sub.broadcast = Broadcast()
        sub.waiters += 1
        self.waiters += 1
        return sub, created

    def add_handler(
        self, kind: str, name: str, callback: Callable[[Delivery], None]
    ) -> tuple[Handler, bool]:
        sub, created = self._register(kind, name)
        sub.handlers += (callback,)
        return Handler(sub, callback), created

    def remove_handler(self, handler: Handler) -> None:
        sub = handler.subscription
        if handler.callback in sub.handlers:
            handlers = list(sub.handlers)
            handlers.remove(handler.callback)
            sub.handlers = tuple(handlers)
            self._drop_if_unused(sub)

    def release_waiter(self, sub: Subscription) -> None:
        sub.waiters -= 1
        self.waiters -= 1
        if not sub.waiters:
            sub.broadcast = None  # what it sent reaches nobody now; the next waiter starts one
        self._drop_if_unused(sub)

    def _register(self, kind: str, name: str) -> tuple[Subscription, bool]:
        sub = self.get((kind, name))
        if sub is not None:
            return sub, False
        sub = self[(kind, name)] = Subscription(kind, name)
        return sub, True

    def _drop_if_unused(self, sub: Subscription) -> None:
        if sub.waiters or sub.handlers:
            return
        if self.get((sub.kind, sub.name)) is sub:
            del self[(sub.kind, sub.name)]
            self._unsubscribe(sub)


class Watch:
    """A waiter's place on one channel. Use as a context manager so it is always released."""

    __slots__ = ("_subscriptions", "_sub", "_follower")

    def __init__(self, subscriptions: Subscriptions, sub: Subscription):
        self._subscriptions = subscriptions
        self._sub = sub
        self._follower = sub.broadcast.follow()

    @property
    def channel(self) -> str:
        return self._sub.name

    def next(self, timeout: float) -> Delivery | None:
        """Block until the next delivery on the channel, or None once `timeout` seconds pass."""
        self._subscriptions.parked += 1
        try:
            _, delivery = self._follower.wait(timeout)
        finally:
            self._subscriptions.parked -= 1
        return delivery

    def close(self) -> None:
        if self._sub is not None:
            self._subscriptions.release_waiter(self._sub)
            self._sub = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def deliver(
    sub: Subscription | None, channel: str, data: str, source: str, received: float
) -> None:
    """Wake every waiter of `sub` and call each of its handlers."""
    if sub is None:
        return  # a message that was in flight when we unsubscribed
    delivery = Delivery(channel, data, source, received)
    if sub.waiters:
        sub.broadcast.send(delivery)
    for callback in sub.handlers:
        try:
            callback(delivery)
        except Exception:
            log.exception("hub handler failed on %s", channel)
