"""Requests that queue for a turn by their socket alone, not by a blocked greenlet.

A request that blocks on a semaphore for its turn keeps its greenlet, that greenlet's stack
and the server's per-request objects alive meanwhile. In a burst of 10,000 long polls that
was 10,000 greenlets at once, about 18 KiB each, and what they freed came back to the
allocator in fragments: the parked requests' own small objects, allocated in between, kept
it from being given back to the system (9.6 KiB of RSS per held wait after a 10,000-wait
burst, against 3.3 KiB when the same waits arrived a few at a time). A queued request is
its socket and a few fields; its greenlet has ended.

The queue takes the turns of the semaphore that callers with a greenlet of their own take
too, first come first served among the queued, and runs each queued request in a greenlet of
its own while it holds the turn it took; the turn is given back when the request returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import gevent
from gevent.event import Event


class TurnQueue:
    def __init__(self, turns):
        self.turns = turns  # a gevent (Bounded)Semaphore, or a DummySemaphore: never full
        self._queued: deque[Callable[[], None]] = deque()
        self._running = 0
        self._dispatcher: gevent.Greenlet | None = None
        self._empty = Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._queued)

    def full(self) -> bool:
        """No turn is free, or requests queue already: a newcomer goes behind them."""
        return bool(self._queued) or self.turns.locked()

    def put(self, run: Callable[[], None]) -> None:
        """Call `run()` with a turn, once one is free and the requests before it had theirs."""
        self._queued.append(run)
        self._empty.clear()
        if self._dispatcher is None or self._dispatcher.dead:
            self._dispatcher = gevent.spawn(self._dispatch)

    def wait_empty(self, timeout: float) -> bool:
        """Block until every queued request has run (a stopping worker), `timeout` at most."""
        return self._empty.wait(timeout)

    def _dispatch(self) -> None:
        while self._queued:
            self.turns.acquire()  # only this greenlet blocks for the queue's turns
            self._running += 1
            gevent.spawn(self._run, self._queued.popleft())

    def _run(self, run: Callable[[], None]) -> None:
        try:
            run()
        finally:
            self.turns.release()
            self._running -= 1
            if not self._running and not self._queued:
                self._empty.set()
