"""The chaos campaign's checker (bench/chaos_history.py) finds each kind of failure it is
there to find, and its schedule is the seed's alone."""

from bench.chaos_faults import KINDS, schedule
from bench.chaos_history import Answer, Fault, History, Seen, Settled, check

ORDER = "order-1"
SETTLED_AT = 1000.0
PAID = {ORDER: Settled("completed", 2, SETTLED_AT, accepted_callbacks=1)}
NO_LEAKS = {"order subscriptions": 0}


def followed(*seen: tuple[float, int, str], client="wait1") -> History:
    history = History()
    history.follow(client, "wait", ORDER)
    history.seen += [Seen(client, ORDER, at, version, status) for at, version, status in seen]
    return history


def test_a_clean_history_has_no_failures_and_its_staleness():
    history = followed((999.0, 1, "processing"), (1000.05, 2, "completed"))
    report = check(history, PAID, NO_LEAKS)
    assert report.failures == 0
    assert report.settled == 1
    assert [round(s, 3) for s in report.staleness["none"]] == [0.05]


def test_a_follower_that_never_saw_the_end_is_lost():
    report = check(followed((999.0, 1, "processing")), PAID, NO_LEAKS)
    assert len(report.lost) == 1 and report.failures == 1
    # A follower of an order that never settled has nothing to miss.
    processing = {ORDER: Settled("processing", 1, None, accepted_callbacks=0)}
    assert check(followed((999.0, 1, "processing")), processing, NO_LEAKS).failures == 0


def test_a_version_going_back_is_a_regression():
    history = followed((999.0, 2, "completed"), (999.5, 1, "processing"), (1000.1, 2, "completed"))
    report = check(history, PAID, NO_LEAKS)
    assert len(report.regressions) == 1


def test_settled_twice_or_versions_out_of_step_are_double_settlements():
    orders = {
        "twice": Settled("completed", 3, SETTLED_AT, accepted_callbacks=2),
        "bumped twice": Settled("completed", 3, SETTLED_AT, accepted_callbacks=1),
        "accepted, not settled": Settled("processing", 1, None, accepted_callbacks=1),
        "fine": Settled("cancelled", 2, SETTLED_AT, accepted_callbacks=1),
    }
    report = check(History(), orders, NO_LEAKS)
    assert len(report.double_settlements) == 3
    assert not any(line.startswith("fine") for line in report.double_settlements)


def answer(status, *, retry_after=False, bad_input=False, at=500.0, error=None) -> Answer:
    return Answer("c", "create", None, at, at + 1.0, status, retry_after, error, bad_input)


def test_only_contract_answers_pass_and_cuts_by_a_killed_worker_are_counted_apart():
    history = History()
    history.faults.append(Fault("worker-kill", "app1 worker 7", 600.5, 600.5))
    history.answers += [
        answer(200),
        answer(204),
        answer(503, retry_after=True),
        answer(400, bad_input=True),
        answer(502, at=600.0),  # in flight when the worker was killed
        answer(None, at=600.0, error="ConnectionError"),
        answer(502, at=601.0),  # sent just after the kill, on a connection to the dead worker
    ]
    report = check(history, {}, NO_LEAKS)
    assert report.bad_answers == [] and report.cut_by_killed_worker == 3
    history.answers += [
        answer(503),  # no Retry-After
        answer(400),  # the load sent nothing wrong
        answer(502),  # no worker was killed then
        answer(502, at=601.6),  # sent well after the kill
        answer(None, error="ReadTimeout"),
        answer(429, retry_after=True),
    ]
    assert len(check(history, {}, NO_LEAKS).bad_answers) == 6


def test_leaks_are_failures():
    assert check(History(), {}, {"leases of live workers": 2}).failures == 2


def test_staleness_is_counted_for_each_fault_acting_on_the_delivery():
    history = followed((1001.0, 2, "completed"))
    history.faults += [
        Fault("redis-freeze", "redis", 998.5, 1000.8),  # frozen across the settlement
        Fault("pg-restart", "postgres", 990.0, 991.0),  # over well before it
    ]
    report = check(history, PAID, NO_LEAKS)
    assert set(report.staleness) == {"redis-freeze"}


def test_a_schedule_is_the_seeds_alone_and_a_short_one_has_every_kind():
    assert schedule(5, 60, 16, 2) == schedule(5, 60, 16, 2)
    assert schedule(5, 60, 16, 2) != schedule(6, 60, 16, 2)
    plan = schedule(5, 60, len(KINDS), 2)
    assert {p.kind for p in plan} == set(KINDS)
    assert all(2.0 <= p.at <= 52.0 for p in plan)
