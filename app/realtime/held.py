"""What the parking lot holds (app/realtime/parking.py): a feature's `Held` request, inside
a `Parked` of the long-poll transport (app/realtime/longpoll.py), which encodes its answers
and writes them to the client."""

from __future__ import annotations

from typing import Protocol

from .hub import Delivery


class Held(Protocol):
    """What is held: a feature's request, answered by a delivery or at its deadline."""

    channel: str
    deadline: float  # time.monotonic()

    def answer(self, delivery: Delivery, memo: dict) -> dict | None:
        """The answer body if `delivery` answers it, else None. `memo` is shared by every
        request the delivery is offered to: decode or build once there."""

    @staticmethod
    def finish(held: list, reason: str) -> list[dict]:
        """The answer bodies, in order, of requests whose deadline passed (TIMEOUT) or whose
        worker stops (SHUTDOWN): one call for many, so their state is read in one go."""

    def close(self, written_at: float | None = None) -> None:
        """Give back what it holds, and count its answer if it had one."""


class Parked:
    """One parked request: what is held, and how its answer reaches the client."""

    __slots__ = ("held", "channel", "deadline", "done", "written_at")

    def __init__(self, held: Held):
        self.held = held
        self.channel: str | None = None  # the watch's, set when parked: one string per channel
        self.deadline = held.deadline
        self.done = False
        self.written_at: float | None = None  # time.monotonic() once the response is out

    def __lt__(self, other: Parked) -> bool:
        return self.deadline < other.deadline  # the lot's deadline heap, without a tuple each

    def encode(self, body: dict, memo: dict):
        """What to write for `body`; `memo` as in Held.answer."""
        raise NotImplementedError

    def send_now(self, data):
        """Write what the client takes without waiting: the rest (empty when none, or the
        client is gone)."""
        raise NotImplementedError

    def send_and_close(self, data) -> None:
        """Write all of `data` (waiting as long as it takes) and let go of the client."""
        raise NotImplementedError

    def respond(self, delivery: Delivery, memo: dict):
        body = self.held.answer(delivery, memo)
        return None if body is None else self.encode(body, memo)
