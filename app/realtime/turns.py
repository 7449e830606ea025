"""Requests that queue for a turn by their socket alone, not by a blocked greenlet.

A request that blocks on a semaphore for its turn keeps its greenlet, that greenlet's stack
and the server's per-request objects alive meanwhile. In a burst of 10,000 long polls that
was 10,000 greenlets at once, about 18 KiB each, and what they freed came back to the
allocator in fragments: the parked requests' own small objects, allocated in between, kept
it from being given back to the system (9.6 KiB of RSS per held wait after a 10,000-wait
burst, against 3.3 KiB when the same waits arrived a few at a time). A queued request is
its socket and a few fields; its greenlet has ended.

The queue takes the turns of the semaphore that blocking callers take too, first come
first served among the queued (a blocking caller is not behind the queue: it waits on the
semaphore beside the queue's dispatcher), and runs each queued request in a greenlet of its
own with the turn it took: a `Turn`, which the request may give back early and take again.
Whatever the request still holds when its `run` returns, the queue gives back.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import gevent
from gevent.event import Event


class Turn:
    """A turn of `turns`, taken already. As a context manager it is the turn a request
    holds while it works: entering takes it again if it was given back (waiting for it),
    leaving gives it back."""

    __slots__ = ("_turns", "held")

    def __init__(self, turns):
        self._turns = turns
        self.held = True

    def __enter__(self) -> None:
        if not self.held:
            self._turns.acquire()
            self.held = True

    def __exit__(self, *_) -> None:
        self.give_back()

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self._turns.release()


class Queued(Protocol):
    def run(self, turn: Turn) -> None:
        """Serve the request with `turn`; answer it on its socket or hand it over."""


class TurnQueue:
    def __init__(self, turns):
        self._turns = turns  # a gevent (Bounded)Semaphore, or a DummySemaphore: never full
        self._queued: deque[Queued] = deque()
        self._running = 0
        self._dispatcher: gevent.Greenlet | None = None
        self._empty = Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._queued)

    def full(self) -> bool:
        """No turn is free, or requests queue already: a newcomer goes behind them."""
        return bool(self._queued) or self._turns.locked()

    def put(self, request: Queued) -> None:
        self._queued.append(request)
        self._empty.clear()
        if self._dispatcher is None or self._dispatcher.dead:
            self._dispatcher = gevent.spawn(self._dispatch)

    def wait_empty(self, timeout: float) -> bool:
        """Block until every queued request has run (a stopping worker), `timeout` at most."""
        return self._empty.wait(timeout)

    def _dispatch(self) -> None:
        while self._queued:
            self._turns.acquire()  # only this greenlet blocks for the queue's turns
            self._running += 1
            gevent.spawn(self._run, self._queued.popleft(), Turn(self._turns))

    def _run(self, request: Queued, turn: Turn) -> None:
        try:
            request.run(turn)
        finally:
            turn.give_back()
            self._running -= 1
            if not self._running and not self._queued:
                self._empty.set()
