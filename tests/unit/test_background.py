"""The stats trigger's bounds and the once-per-deployment leases, without HTTP."""

import time

import gevent

from app.admin.trigger import StatsTrigger
from app.realtime.leader import LeaderJob
from tests.support.servers import eventually


def make_trigger(sample_rate: float, **options) -> tuple[StatsTrigger, list[float]]:
    announced: list[float] = []
    settings = {"min_interval": 0.1, "trailing_delay": 0.3, **options}
    trigger = StatsTrigger(
        lambda: announced.append(time.monotonic()), sample_rate=sample_rate, **settings
    )
    return trigger, announced


def test_a_burst_is_announced_at_a_bounded_rate():
    trigger, announced = make_trigger(1.0)
    started = time.monotonic()
    while time.monotonic() - started < 0.5:  # thousands of changes in half a second
        trigger.changed()
        gevent.sleep(0)
    gevent.sleep(0.4)  # let the trailing announcement land
    # At most one per min_interval, the trailing one included.
    assert 2 <= len(announced) <= 0.9 / 0.1 + 1
    gaps = [b - a for a, b in zip(announced, announced[1:], strict=False)]
    assert all(gap >= 0.1 - 0.01 for gap in gaps), gaps


def test_an_unsampled_change_is_announced_by_the_trailing_announcement():
    trigger, announced = make_trigger(0.0, trailing_delay=0.2)
    changed_at = time.monotonic()
    for _ in range(50):
        trigger.changed()
    assert announced == []
    eventually(lambda: announced, 2, "the trailing announcement")
    assert len(announced) == 1
    assert 0.15 <= announced[0] - changed_at < 1.0
    gevent.sleep(0.4)
    assert len(announced) == 1  # nothing changed since: no more


def test_a_sampled_change_leaves_no_trailing_announcement():
    trigger, announced = make_trigger(1.0, trailing_delay=0.2)
    trigger.changed()
    gevent.sleep(0.4)
    assert len(announced) == 1


def test_a_job_runs_on_one_leaseholder_at_a_time_and_moves_when_it_stops(redis_client):
    runs: list[str] = []
    jobs = {
        name: LeaderJob(
            redis_client,
            "test-job",
            lambda name=name: runs.append(name),
            interval=0.1,
            lease_ttl=0.6,
        )
        for name in ("first", "second")
    }
    for job in jobs.values():
        job.start()
    try:
        eventually(lambda: len(runs) >= 5, 5, "runs")
        assert len(set(runs)) == 1, runs  # one holder only
        holder_name = runs[0]
        assert [n for n, job in jobs.items() if job.leader] == [holder_name]

        jobs[holder_name].stop()  # gives the lease back
        runs.clear()
        eventually(lambda: runs, 3, "the other worker taking over")
        assert set(runs) == set(jobs) - {holder_name}
    finally:
        for job in jobs.values():
            job.stop()


def test_a_crashed_leaseholder_is_replaced_within_its_lease(redis_client):
    holder = LeaderJob(redis_client, "test-crash", lambda: None, interval=0.1, lease_ttl=0.5)
    holder.start()
    eventually(lambda: holder.leader, 3, "a leader")
    holder._greenlet.kill()  # dies without giving the lease back
    ran = []
    successor = LeaderJob(
        redis_client, "test-crash", lambda: ran.append(1), interval=0.1, lease_ttl=0.5
    )
    successor.start()
    try:
        gevent.sleep(0.2)
        assert not ran  # the dead holder's lease still stands
        eventually(lambda: ran, 2, "the successor after the lease expired")
    finally:
        successor.stop()


def test_a_stopped_trigger_announces_nothing_more():
    trigger, announced = make_trigger(0.0, trailing_delay=0.1)
    trigger.changed()  # schedules a trailing announcement
    trigger.stop()
    trigger.changed()
    gevent.sleep(0.3)
    assert announced == []
