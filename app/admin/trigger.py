"""When to tell the admin screens that statistics moved: sampled, trailed, bounded.

Each order change is announced with probability STATS_SAMPLE_RATE. A change that was not
announced schedules one trailing announcement STATS_TRAILING_DELAY later, so a quiet system
is never stale for longer than that. The rate is bounded per worker whatever the burst:
at most one announcement per STATS_MIN_PUBLISH_INTERVAL, trailing ones included (with the
default 0.25 s, 4 per second per worker).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import gevent


class StatsTrigger:
    def __init__(
        self,
        announce: Callable[[], None],
        *,
        sample_rate: float,
        min_interval: float,
        trailing_delay: float,
        chance: Callable[[], float] = random.random,
    ):
        self._announce = announce  # must not block: it runs in the request's greenlet
        self.sample_rate = sample_rate
        self.min_interval = min_interval
        self.trailing_delay = trailing_delay
        self._chance = chance
        self._last = float("-inf")
        self._unannounced = False
        self._trailing: gevent.Greenlet | None = None
        self._stopped = False
        self.announcements = 0

    def changed(self) -> None:
        """An order changed."""
        if self._stopped:
            return
        self._unannounced = True
        now = time.monotonic()
        if self._chance() < self.sample_rate and now - self._last >= self.min_interval:
            self._fire(now)
        elif self._trailing is None:
            self._trailing = gevent.spawn_later(self.trailing_delay, self._trail)

    def stop(self) -> None:
        """Announce nothing more, not even a pending trailing announcement."""
        self._stopped = True
        if self._trailing is not None:
            self._trailing.kill()
            self._trailing = None

    def _trail(self) -> None:
        self._trailing = None
        if not self._unannounced:
            return
        too_soon_by = self._last + self.min_interval - time.monotonic()
        if too_soon_by > 0:
            self._trailing = gevent.spawn_later(too_soon_by, self._trail)
            return
        self._fire(time.monotonic())

    def _fire(self, now: float) -> None:
        self._last = now
        self._unannounced = False
        self.announcements += 1
        self._announce()
