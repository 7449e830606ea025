"""The broadcast behind every channel's wake-up (app/realtime/signals.py), on its own."""

import gevent

from app.realtime.signals import Broadcast


def others_ran_meanwhile(action):
    """Run `action`; True if another greenlet got to run while it did (it switched)."""
    ran = []
    gevent.spawn(ran.append, True)
    result = action()
    return result, bool(ran)


def test_a_value_sent_already_is_taken_without_switching_greenlets():
    """What a parking wait relies on: looking for pending deliveries never lets another
    greenlet in, even while a follower blocked on the same signal is being woken."""
    broadcast = Broadcast()
    blocked = gevent.spawn(broadcast.follow().wait, None)
    gevent.sleep(0)  # it blocks on the signal
    late = broadcast.follow()
    broadcast.send("news")

    result, switched = others_ran_meanwhile(lambda: late.wait(0))

    assert result == (True, "news")
    assert not switched
    assert blocked.get(timeout=1) == (True, "news")


def test_nothing_sent_and_no_time_to_wait_returns_at_once():
    """gevent's Event.wait(0) switches to its hub (a timer of 0 s): this must not."""
    follower = Broadcast().follow()
    result, switched = others_ran_meanwhile(lambda: follower.wait(0))
    assert result == (False, None)
    assert not switched


def test_a_follower_sees_every_value_in_order():
    broadcast = Broadcast()
    follower = broadcast.follow()
    for value in ("a", "b", "c"):
        broadcast.send(value)
    assert [follower.wait(0) for _ in range(4)] == [
        (True, "a"),
        (True, "b"),
        (True, "c"),
        (False, None),
    ]
    waiter = gevent.spawn(follower.wait, 5)
    gevent.sleep(0)
    broadcast.send("d")
    assert waiter.get(timeout=1) == (True, "d")
