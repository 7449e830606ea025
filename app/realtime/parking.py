"""Parked requests: long polls held by their socket alone, without a greenlet each.

A held request served the usual way keeps its greenlet, that greenlet's stack and the
server's per-request objects alive until it is answered: about 15 KiB before the application
adds anything (gunicorn's gevent worker, measured). A parked request is a copy of the
client's socket plus a few fields: the server's greenlet finishes and its objects are freed.

The lot subscribes through the hub (one handler per channel, whatever the number of parked
requests on it). A delivery is answered in the hub's own greenlet as it is read: an answer
is a few hundred bytes into an idle socket, which a non-blocking send takes whole, so it
leaves at once instead of queueing behind every request the worker is busy with. What a
socket does not take at once, and the bookkeeping of written answers (metrics, logs), go to
one writer greenlet. One timer greenlet answers requests whose deadline passed, in batches,
so their final state is read with one query. On shutdown every parked request is answered
at once, and the worker waits for that before it exits.

The lot knows no feature: a parked request holds a `Held` (which turns deliveries, or its
deadline, into answer bodies) and is a `Parked` of the transport (which encodes a body for
its client and writes it).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import gevent
from gevent.event import Event

from .held import Parked
from .hub import SHUTDOWN, Delivery, Handler, Hub, Watch

log = logging.getLogger(__name__)

TIMEOUT = "timeout"


class ParkingLot:
    def __init__(self, hub: Hub, context: Callable[[], AbstractContextManager] = nullcontext):
        self._hub = hub
        self._context = context  # what a Held's finish() runs in (the application's context)
        # A channel's parked requests: the request itself while it is the only one (most
        # channels of a spread hold one, and a dict would cost more than the request), else
        # a dict of them in the order they came.
        self._by_channel: dict[str, Parked | dict[Parked, None]] = {}
        self._handlers: dict[str, Handler] = {}
        self._deadlines: list[Parked] = []  # a heap: Parked orders by deadline
        self._deliveries: list[Delivery] = []
        self._unfinished: list[tuple[Parked, object]] = []  # answers not taken whole at once
        self._unrecorded: list[Parked] = []  # written, their bookkeeping not done yet
        self._delivered = Event()
        self._timer_reset = Event()
        self._emptied = Event()
        self._emptied.set()
        self._deliver = self._on_delivery  # one bound method for every channel's handler
        self._writer: gevent.Greenlet | None = None
        self._timer: gevent.Greenlet | None = None
        self.count = 0

    def park(self, request: Parked, watch: Watch):
        """Take over `request`, whose `watch` is registered already. Returns the response to
        write right away when a delivery that answers it came in meanwhile (nothing is
        parked then); else None, and the lot answers it later."""
        if self._hub.closing:  # the worker stops: answer with what there is, hold nothing
            watch.close()
            return self._finished([request], SHUTDOWN)[0]
        self._ensure_running()
        channel = request.channel = watch.channel
        if channel not in self._handlers:
            # The watch holds the subscription, so no command is sent here.
            self._handlers[channel] = self._hub.add_handler(channel, self._deliver, like_watch=True)
        try:
            # What came in since the watch was taken. Once this finds nothing, nothing below
            # switches greenlets until the request is parked: no delivery falls between.
            response = None
            while response is None and (delivery := watch.next(0)) is not None:
                if delivery.source == SHUTDOWN:
                    response = self._finished([request], SHUTDOWN)[0]
                else:
                    response = request.respond(delivery, {})
        finally:
            watch.close()
        if response is not None:
            if channel not in self._by_channel:
                self._forget(channel)
            return response
        self._add(channel, request)
        heapq.heappush(self._deadlines, request)
        if self._deadlines[0] is request:
            self._timer_reset.set()  # earlier than what the timer sleeps for
        self.count += 1
        self._hub.count_parked(1)
        self._emptied.clear()
        return None

    def wait_empty(self, timeout: float) -> bool:
        """After a drain (graceful shutdown), block until every parked request was answered,
        at most `timeout` seconds. Without one (a quick shutdown) there is nothing to wait
        for: nobody answers them."""
        return self._hub.closing and self._emptied.wait(timeout)

    def stop(self) -> None:
        gevent.killall([g for g in (self._writer, self._timer) if g is not None])
        self._writer = self._timer = None

    # -- inside the lot ----------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._write_deliveries)
        if self._timer is None or self._timer.dead:
            self._timer = gevent.spawn(self._expire_deadlines)

    def _on_delivery(self, delivery: Delivery) -> None:
        # In the hub's greenlet. Answered here unless the writer has deliveries queued (they
        # go first, in order) or the worker stops (the writer answers everything at once).
        if delivery.source == SHUTDOWN or self._deliveries:
            self._deliveries.append(delivery)
        else:
            try:
                self._answer_channel(delivery, self._unrecorded, self._write_at_once)
            except Exception:
                log.exception("parked requests of %s not answered", delivery.channel)
        self._delivered.set()

    def _write_at_once(self, request: Parked, response) -> bool:
        """Send what the client takes without waiting; the writer sends the rest. True when
        the request is done with (written whole, or its client gone)."""
        rest = request.send_now(response)
        if rest:
            self._unfinished.append((request, rest))
            return False
        return True

    def _write_deliveries(self) -> None:
        while True:
            self._delivered.wait()
            self._delivered.clear()
            self._finish_unfinished()
            recorded, self._unrecorded = self._unrecorded, []
            self._after_writes(recorded)
            deliveries, self._deliveries = self._deliveries, []
            if any(d.source == SHUTDOWN for d in deliveries):
                # The worker stops: answer everything parked, in one batch.
                everything = [r for channel in self._by_channel for r in self._parked_on(channel)]
                try:
                    self._finish_and_write(everything, SHUTDOWN)
                except Exception:
                    log.exception("parked requests not answered at shutdown")
                continue
            for delivery in deliveries:
                written: list[Parked] = []
                try:
                    self._answer_channel(delivery, written)
                except Exception:
                    log.exception("parked requests of %s not answered", delivery.channel)
                self._after_writes(written)

    def _finish_unfinished(self) -> None:
        unfinished, self._unfinished = self._unfinished, []
        for request, rest in unfinished:
            self._send_and_close(request, rest)
        self._after_writes([request for request, _ in unfinished])

    def _answer_channel(self, delivery: Delivery, written: list[Parked], write=None) -> None:
        """Answer the requests `delivery` concerns; those written whole go on `written`, for
        the caller's bookkeeping. `write` sends without waiting (the hub's greenlet)."""
        memo: dict = {}
        for request in self._parked_on(delivery.channel):
            if not request.done and (response := request.respond(delivery, memo)) is not None:
                if self._write(request, response, write):
                    written.append(request)

    def _expire_deadlines(self) -> None:
        while True:
            wait_for = self._deadlines[0].deadline - time.monotonic() if self._deadlines else None
            if wait_for is None or wait_for > 0:
                self._timer_reset.wait(wait_for)
                self._timer_reset.clear()
                continue
            now, due = time.monotonic(), []
            while self._deadlines and self._deadlines[0].deadline <= now:
                request = heapq.heappop(self._deadlines)
                if not request.done:
                    due.append(request)
            if due:
                try:
                    self._finish_and_write(due, TIMEOUT)
                except Exception:
                    log.exception("%d expired parked requests not answered", len(due))

    def _finish_and_write(self, requests: list[Parked], reason: str) -> None:
        by_kind: dict[type, list[Parked]] = {}
        for request in requests:
            if not request.done:
                by_kind.setdefault(type(request.held), []).append(request)
        for group in by_kind.values():
            written = []
            # finish() reads the database: meanwhile the writer may have answered some.
            for request, response in zip(group, self._finished(group, reason), strict=True):
                if not request.done:
                    self._write(request, response)
                    written.append(request)
            self._after_writes(written)

    def _finished(self, requests: list[Parked], reason: str) -> list:
        """What to write to requests of one kind of Held that are finished for `reason`."""
        with self._context():
            bodies = type(requests[0].held).finish([r.held for r in requests], reason)
        return [r.encode(body, {}) for r, body in zip(requests, bodies, strict=True)]

    def _write(self, request: Parked, response, write=None) -> bool:
        """Write and close, with `write` when given (see _write_at_once); True once done.
        The bookkeeping (`written`) comes after the whole batch, so the last of many
        waiters of one delivery is not kept waiting for the others' logs."""
        request.done = True
        if self._remove(request):
            self._forget(request.channel)
        self.count -= 1
        self._hub.count_parked(-1)
        if write is None:
            self._send_and_close(request, response)
        elif write(request, response):
            self._send_and_close(request, None)
        else:
            return False  # the writer sends the rest and closes
        return True

    @staticmethod
    def _send_and_close(request: Parked, data) -> None:
        try:
            request.send_and_close(data)
        finally:
            request.written_at = time.monotonic()

    def _after_writes(self, requests: list[Parked]) -> None:
        for request in requests:
            try:
                request.held.close(request.written_at)
            except Exception:
                log.exception("after writing a parked response")
            request.held = None  # the deadline heap may keep the request a while longer
        if self.count == 0:
            self._emptied.set()
        # Answered requests leave the deadline heap when their deadline comes: under a steady
        # flow of answers that is most of it. Drop them once they outnumber the parked.
        if len(self._deadlines) > 2 * self.count + 1000:
            self._deadlines = [request for request in self._deadlines if not request.done]
            heapq.heapify(self._deadlines)

    def _add(self, channel: str, request: Parked) -> None:
        parked = self._by_channel.get(channel)
        if parked is None:
            self._by_channel[channel] = request
        elif isinstance(parked, dict):
            parked[request] = None
        else:
            self._by_channel[channel] = {parked: None, request: None}

    def _parked_on(self, channel: str) -> list[Parked]:
        parked = self._by_channel.get(channel)
        if parked is None:
            return []
        return list(parked) if isinstance(parked, dict) else [parked]

    def _remove(self, request: Parked) -> bool:
        """Take `request` off its channel: True when that leaves the channel with none."""
        parked = self._by_channel.get(request.channel)
        if isinstance(parked, dict):
            parked.pop(request, None)
            if parked:
                return False
        elif parked is not request:
            return False
        del self._by_channel[request.channel]
        return True

    def _forget(self, channel: str) -> None:
        """Let go of a channel no request is parked on any more: its hub handler."""
        handler = self._handlers.pop(channel, None)
        if handler is not None:
            self._hub.remove_handler(handler)
