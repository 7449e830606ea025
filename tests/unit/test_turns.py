"""The turn queue on its own: requests that wait for a turn without a greenlet each."""

import gevent
import pytest
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from app.realtime.turns import TurnQueue


class Request:
    """A queued request that notes when it ran and holds its turn until told to finish."""

    def __init__(self, name: str, log: list, *, give_back_early=False, fail=False):
        self.name = name
        self.log = log
        self.give_back_early = give_back_early
        self.fail = fail
        self.finish = Event()

    def run(self, turn) -> None:
        self.log.append(self.name)
        if self.give_back_early:
            with turn:
                pass  # its opening done, it gives the turn back and goes on without it
        if self.fail:
            raise RuntimeError("the request failed")
        self.finish.wait(5)


def test_queued_requests_run_one_turn_at_a_time_in_arrival_order():
    turns = BoundedSemaphore(1)
    queue, log = TurnQueue(turns), []
    requests = [Request(str(n), log) for n in range(4)]
    turns.acquire()  # taken by someone else: everything queues
    assert queue.full()
    for request in requests:
        queue.put(request)
    gevent.sleep(0.05)
    assert log == []
    turns.release()
    for n, request in enumerate(requests):
        gevent.sleep(0.05)
        assert log == [str(i) for i in range(n + 1)]  # the next waits for this one's turn
        request.finish.set()
    assert queue.wait_empty(1)
    assert not queue.full() and not turns.locked()


def test_a_newcomer_goes_behind_the_queue_even_when_a_turn_is_free():
    turns = BoundedSemaphore(2)
    queue, log = TurnQueue(turns), []
    turns.acquire()
    turns.acquire()
    queue.put(Request("queued", log))
    turns.release()  # a turn is free, but the queued request has not taken it yet
    assert queue.full()
    gevent.sleep(0.05)
    assert log == ["queued"]


def test_a_turn_given_back_early_lets_the_next_request_run():
    turns = BoundedSemaphore(1)
    queue, log = TurnQueue(turns), []
    first = Request("first", log, give_back_early=True)
    second = Request("second", log)
    queue.put(first)
    queue.put(second)
    gevent.sleep(0.05)
    assert log == ["first", "second"]  # while the first still runs, without its turn
    first.finish.set()
    second.finish.set()
    assert queue.wait_empty(1)
    assert not turns.locked()


@pytest.mark.parametrize("give_back_early", [False, True])
def test_a_failed_request_gives_its_turn_back_once(give_back_early):
    turns = BoundedSemaphore(1)  # raises ValueError if released more than acquired
    queue, log = TurnQueue(turns), []
    queue.put(Request("fails", log, give_back_early=give_back_early, fail=True))
    queue.put(after := Request("after", log))
    gevent.sleep(0.05)
    assert log == ["fails", "after"]
    after.finish.set()
    assert queue.wait_empty(1)
    assert not turns.locked()
    turns.acquire()
    turns.release()  # the count is whole: one turn, free
