"""The turn queue on its own: requests that wait for a turn without a greenlet each."""

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from app.realtime.turns import TurnQueue


class Request:
    """A queued request that notes when it ran and holds its turn until told to finish."""

    def __init__(self, name: str, log: list, *, fail=False):
        self.name = name
        self.log = log
        self.fail = fail
        self.finish = Event()

    def run(self) -> None:
        self.log.append(self.name)
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
        queue.put(request.run)
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
    queue.put(Request("queued", log).run)
    turns.release()  # a turn is free, but the queued request has not taken it yet
    assert queue.full()
    gevent.sleep(0.05)
    assert log == ["queued"]


def test_a_failed_request_gives_its_turn_back_once():
    turns = BoundedSemaphore(1)  # raises ValueError if released more than acquired
    queue, log = TurnQueue(turns), []
    queue.put(Request("fails", log, fail=True).run)
    queue.put((after := Request("after", log)).run)
    gevent.sleep(0.05)
    assert log == ["fails", "after"]
    after.finish.set()
    assert queue.wait_empty(1)
    assert not turns.locked()
    turns.acquire()
    turns.release()  # the count is whole: one turn, free
