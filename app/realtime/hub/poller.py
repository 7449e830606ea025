"""The database side: while Redis is away, waiters hear of changes by polling.

One batched query per interval for every channel watched in this process, through poll
sources the features register. On recovery the watched channels are read once more, so a
change whose publish was lost during the outage still reaches its waiters.

While connected, the same read runs every `safety_interval` as a safety net: a publish can
fail on the process that settled an order (its own link to Redis cut) while this one's
subscription is fine, and nothing else would tell a stream here of that change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from app.logs import first_line

from .links import Links
from .registry import Subscriptions, deliver

log = logging.getLogger(__package__)

# A poll source maps watched ids (channel names without the source's prefix and suffix) to
# (version, payload) for the ids that exist; payload has the shape of a published message.
PollSource = Callable[[list[str]], dict[str, tuple[int, str]]]


class FallbackPoller:
    def __init__(
        self,
        subscriptions: Subscriptions,
        links: Links,
        *,
        watch_kind: str,
        interval: float,
        confirm_timeout: float,
        safety_interval: float = 0.0,
    ):
        self._subs = subscriptions
        self._links = links
        self._watch_kind = watch_kind  # only waiters' channels are polled
        self._interval = interval
        self._safety_interval = safety_interval  # 0: no safety net while connected
        self._last_poll = time.monotonic()
        self._confirm_timeout = confirm_timeout
        self._sources: dict[tuple[str, str], PollSource] = {}
        self._due = Event()  # wakes the poller before its interval is up
        self._recheck_pending = False  # a forced re-read is owed since the last reconnect
        self.polls = 0

    def add_source(self, prefix: str, poll: PollSource, suffix: str = "") -> None:
        self._sources[(prefix, suffix)] = poll

    def request(self) -> None:
        self._due.set()

    def recheck_after_reconnect(self) -> None:
        """Publishes made while Redis was away are lost: read the truth once."""
        self._recheck_pending = True
        gevent.spawn(self._recheck_when_subscribed)

    def _recheck_when_subscribed(self) -> None:
        """After a reconnect, once Redis confirmed the re-subscriptions, ask for the re-read:
        a change committed after it is then published to a subscribed hub."""
        deadline = time.monotonic() + 2 * self._confirm_timeout
        for sub in list(self._subs.values()):
            if not sub.confirmed.wait(max(deadline - time.monotonic(), 0)):
                break
        self._due.set()

    def run(self) -> None:
        while True:
            self._due.wait(self._interval)
            asked = self._due.is_set()
            self._due.clear()
            force = self._recheck_pending
            connected = self._links.connected
            self._links.count_fallback_time(leaving=connected)
            safety_due = (
                self._safety_interval > 0
                and time.monotonic() - self._last_poll >= self._safety_interval
            )
            if not (asked or force or not connected or safety_due):
                continue
            try:
                if self.poll_once(force=force) and force:
                    self._recheck_pending = False  # else retried next interval
            except Exception:
                log.exception("fallback poll failed")

    def poll_once(self, *, force: bool = False) -> bool:
        """Read every watched channel's state with one batched query per poll source.

        Delivers the channels whose version changed since the last poll, or all of them when
        `force` (after a reconnect); waiters themselves decide whether a delivery is news.
        Returns False when a source failed.
        """
        ok = True
        self._last_poll = time.monotonic()
        for (prefix, suffix), poll in self._sources.items():
            watched = [
                name[len(prefix) : len(name) - len(suffix)]
                for name in self._subs.names(self._watch_kind)
                if name.startswith(prefix)
                and name.endswith(suffix)
                and len(name) > len(prefix) + len(suffix)
            ]
            if not watched:
                continue
            try:
                latest = poll(watched)
            except Exception as exc:
                log.warning("fallback database poll failed: %s", first_line(exc))
                ok = False
                continue
            self.polls += 1
            for ident, (version, data) in latest.items():
                name = prefix + ident + suffix
                sub = self._subs.get((self._watch_kind, name))
                if sub is None or (sub.polled_version == version and not force):
                    continue
                sub.polled_version = version
                deliver(sub, name, data, "poll", time.monotonic())
        return ok
