"""What a chaos campaign's clients saw, and the checks that say whether the service held.

Clients record every answer (`Answer`) and every order state they were shown (`Seen`);
the injector records every fault (`Fault`). At the end `check` holds them against the
database (each order's status, version and settlement time, and its accepted callbacks in
the audit table) and the leak readings taken once every client is gone.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

TERMINAL = frozenset({"completed", "cancelled", "failed", "expired"})
# A request sent this soon after a worker was killed may still go to it: nginx notices the
# death of an idle keep-alive connection only when the kernel tells it.
KILL_NOTICED_S = 1.0
# Window before a settlement in which a fault still counts as acting on its delivery: a
# connection broken just before the webhook is repaired while the answer is under way.
FAULT_REACH_S = 2.0


@dataclass(frozen=True)
class Answer:
    """One HTTP answer (or a request that got none: status None, `error` says why)."""

    client: str
    kind: str  # create, wait, poll, sse, ws, webhook, admin
    order: str | None
    started: float  # time.time()
    ended: float
    status: int | None
    retry_after: bool = False
    error: str | None = None
    bad_input: bool = False  # sent wrong on purpose: a 4xx is the right answer


@dataclass(frozen=True)
class Seen:
    """An order state shown to a client (an answer's body, a stream's event)."""

    client: str
    order: str
    at: float
    version: int
    status: str


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    started: float
    ended: float


@dataclass(frozen=True)
class Settled:
    """An order as the database has it at the end."""

    status: str
    version: int
    settled_at: float | None  # time.time() of the settlement; None while processing
    accepted_callbacks: int  # audit rows with outcome "accepted"


@dataclass
class History:
    answers: list[Answer] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    followers: dict[str, tuple[str, str]] = field(default_factory=dict)  # client: kind, order
    faults: list[Fault] = field(default_factory=list)

    def follow(self, client: str, kind: str, order: str) -> None:
        self.followers[client] = (kind, order)


@dataclass
class Report:
    requests: Counter = field(default_factory=Counter)  # by kind
    faults: Counter = field(default_factory=Counter)  # by kind
    orders: int = 0
    settled: int = 0
    followers: int = 0
    lost: list[str] = field(default_factory=list)  # "client order" that never saw the end
    double_settlements: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    bad_answers: list[str] = field(default_factory=list)
    cut_by_killed_worker: int = 0  # requests in flight on a worker killed with SIGKILL
    leaks: dict[str, int] = field(default_factory=dict)
    staleness: dict[str, list[float]] = field(default_factory=dict)  # fault kind: seconds
    service_errors: list[str] = field(default_factory=list)  # ERROR lines the servers logged
    proxy_errors: dict[str, int] = field(default_factory=dict)  # nginx's, by kind
    fault_log: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return (
            len(self.lost)
            + len(self.double_settlements)
            + len(self.regressions)
            + len(self.bad_answers)
            + sum(self.leaks.values())
        )


def check(history: History, orders: dict[str, Settled], leaks: dict[str, int]) -> Report:
    report = Report(leaks=dict(leaks))
    report.orders = len(orders)
    report.settled = sum(1 for o in orders.values() if o.status in TERMINAL)
    report.requests = Counter(a.kind for a in history.answers)
    report.faults = Counter(f.kind for f in history.faults)
    report.followers = len(history.followers)
    _check_settlements(orders, report)
    _check_answers(history, report)
    _check_followers(history, orders, report)
    return report


def _check_settlements(orders: dict[str, Settled], report: Report) -> None:
    """Settled at most once, and the version bumped exactly once by the settlement."""
    for order_id, order in orders.items():
        terminal = order.status in TERMINAL
        expected_version = 2 if terminal else 1
        if order.accepted_callbacks > 1:
            report.double_settlements.append(f"{order_id}: {order.accepted_callbacks} accepted")
        elif order.version != expected_version:
            report.double_settlements.append(
                f"{order_id}: version {order.version} for status {order.status}"
            )
        elif order.accepted_callbacks == 1 and not terminal:
            report.double_settlements.append(f"{order_id}: accepted but {order.status}")


def _check_answers(history: History, report: Report) -> None:
    """101, 200, 201, 204, a 4xx for bad input, or a 503 with Retry-After; a request cut by
    a worker killed while it was in flight (or just before it was sent) is counted apart:
    nothing can answer it."""
    kills = [f.started for f in history.faults if f.kind == "worker-kill"]
    for answer in history.answers:
        if answer.status in (101, 200, 201, 204):
            continue
        if answer.status == 503 and answer.retry_after:
            continue
        if answer.bad_input and answer.status is not None and 400 <= answer.status < 500:
            continue
        if answer.status in (None, 502) and any(
            answer.started - KILL_NOTICED_S <= at <= answer.ended for at in kills
        ):
            report.cut_by_killed_worker += 1
            continue
        what = answer.status if answer.status is not None else answer.error
        report.bad_answers.append(
            f"{answer.kind} {answer.order} {answer.client} at {answer.started:.3f}: {what}"
        )


def _check_followers(history: History, orders: dict[str, Settled], report: Report) -> None:
    seen_by: dict[str, list[Seen]] = defaultdict(list)
    for seen in history.seen:
        seen_by[seen.client].append(seen)
    staleness: dict[str, list[float]] = defaultdict(list)
    for client, (kind, order_id) in history.followers.items():
        shown = sorted(seen_by.get(client, []), key=lambda s: s.at)
        for earlier, later in zip(shown, shown[1:], strict=False):
            if later.version < earlier.version:
                report.regressions.append(
                    f"{kind} {client} {order_id}: {earlier.version} then {later.version}"
                )
        order = orders.get(order_id)
        if order is None or order.status not in TERMINAL:
            continue
        end = next((s for s in shown if s.status in TERMINAL), None)
        if end is None:
            tried = [a for a in history.answers if a.client == client]
            report.lost.append(
                f"{kind} {client} {order_id}: settled {order.status} at {order.settled_at:.3f},"
                f" saw {[(s.version, round(s.at, 3)) for s in shown]},"
                f" answers {[(a.status or a.error, round(a.started, 3)) for a in tried]}"
            )
            continue
        delay = max(0.0, end.at - order.settled_at)
        for fault_kind in _faults_acting(history.faults, order.settled_at, end.at):
            staleness[fault_kind].append(delay)
    report.staleness = dict(staleness)


def _faults_acting(faults: list[Fault], settled_at: float, seen_at: float) -> set[str]:
    acting = {
        f.kind for f in faults if f.started <= seen_at and f.ended >= settled_at - FAULT_REACH_S
    }
    return acting or {"none"}


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in seconds."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0]
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return cuts[49], cuts[98], ordered[-1]
