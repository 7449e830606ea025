"""A chaos campaign: random faults under a steady mixed load, then proof that nothing was lost.

Starts the deployment of bench/chaos_deployment.py (nginx, two gunicorn instances of two
gevent workers, a private PostgreSQL and Redis), drives the load of bench/chaos_clients.py,
plays a seeded fault schedule (bench/chaos_faults.py) over it, and checks the history
(bench/chaos_history.py): lost terminal states, double settlements, version regressions,
answers outside the contract, and subscriptions, leases or streams left behind. Prints one
table; exits 1 when any of those is not 0.

    .venv/bin/python bench/chaos.py --seed 7 --duration 600 --faults 200   # make chaos
    .venv/bin/python bench/chaos.py --seed 1 --duration 60 --faults 16     # the suite's

A run is reproduced with its seed (the schedule and the load's choices; the servers' own
timing is not).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import closing  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_clients import Load  # noqa: E402
from bench.chaos_deployment import ADMIN_TOKENS, Deployment  # noqa: E402
from bench.chaos_faults import KINDS, Injector, schedule  # noqa: E402
from bench.chaos_history import History, Report, Settled, check, percentiles  # noqa: E402

LEAK_SETTLE_S = 20.0  # leases and presence reports catch up within this after clients leave


def read_orders(deployment: Deployment) -> dict[str, Settled]:
    with closing(deployment.postgres.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT o.id, o.payment_status, o.version,"
            " CASE WHEN o.payment_status <> 'processing' THEN extract(epoch FROM o.updated_at) END,"
            " (SELECT count(*) FROM payment_events e"
            "  WHERE e.order_id = o.id AND e.outcome = 'accepted')"
            " FROM orders o"
        )
        return {
            row[0]: Settled(row[1], row[2], float(row[3]) if row[3] else None, row[4])
            for row in cur.fetchall()
        }


def read_leaks(deployment: Deployment) -> dict[str, int]:
    """What is still held once every client is gone: order subscriptions in Redis, leases
    of live workers, streams and waits the workers report, instances not back on pub/sub.
    Leases of workers killed with SIGKILL expire by themselves and are not counted."""
    client = redis.Redis(port=deployment.redis.port, decode_responses=True)
    killed = {pid for i in deployment.instances for pid in i.killed_pids}
    now = time.time()
    leases = 0
    for pattern in ("limit:waits:*", "sse:streams:*"):
        for key in client.scan_iter(match=pattern):
            for member in client.zrangebyscore(key, now, "+inf"):
                pid = member.split(":")[1] if member.count(":") >= 2 else ""
                if not (pid.isdigit() and int(pid) in killed):
                    leases += 1
    totals = requests.get(
        deployment.url + "/api/realtime/stats",
        headers={"Authorization": f"Bearer {ADMIN_TOKENS[0]}"},
        timeout=10,
    ).json()["totals"]
    not_ready = 0
    for instance in deployment.instances:
        ready = requests.get(f"http://127.0.0.1:{instance.port}/readyz", timeout=10).json()
        not_ready += ready["status"] != "ok"
    return {
        "order subscriptions": len(client.pubsub_channels("order:*")),
        "leases of live workers": leases,
        "waits held": totals.get("waiters", 0),
        "streams open": totals.get("streams", 0),
        "instances not back on pub/sub": not_ready,
    }


def proxy_errors(log: str) -> dict[str, int]:
    """nginx's errors by kind ("connect() failed", "no live upstreams", ...)."""
    kinds = re.findall(r"\[error\] [0-9#]+: \*?[0-9]* ?([a-z][^(,]*)", log)
    return dict(Counter(kind.strip() for kind in kinds))


def settled_leaks(deployment: Deployment) -> dict[str, int]:
    deadline = time.monotonic() + LEAK_SETTLE_S
    while True:
        leaks = read_leaks(deployment)
        if not any(leaks.values()) or time.monotonic() > deadline:
            return leaks
        time.sleep(1.0)


def run(seed: int, duration: float, faults: int, rate: float, grace: float) -> Report:
    plan = schedule(seed, duration, faults, instances=2)
    print(f"seed {seed}: {duration:.0f} s, {len(plan)} faults, {rate} customers/s", flush=True)
    deployment = Deployment()
    try:
        history = History()
        load = Load(deployment.url, history, seed)
        injector = Injector(deployment, seed)
        load.start_admins(ADMIN_TOKENS)
        playing = gevent.spawn(injector.run, plan, time.monotonic())
        load.run_customers(duration, rate)
        playing.join()
        load.finish(grace)
        history.faults = injector.done
        report = check(history, read_orders(deployment), settled_leaks(deployment))
        for instance in deployment.instances:
            instance.keep_errors()
            report.service_errors += instance.errors
        report.proxy_errors = proxy_errors(deployment.nginx.error_log.read_text())
        report.fault_log = [
            f"{f.started:.3f}-{f.ended:.3f} {f.kind}: {f.target}" for f in history.faults
        ]
        return report
    finally:
        deployment.destroy()


def table(report: Report, seed: int, duration: float) -> str:
    rows = [
        "| figure | value |",
        "|---|---|",
        f"| seed, duration | {seed}, {duration:.0f} s |",
    ]
    rows += [f"| faults: {kind} | {report.faults.get(kind, 0)} |" for kind in KINDS]
    rows += [f"| requests: {kind} | {n} |" for kind, n in sorted(report.requests.items())]
    rows += [
        f"| orders created, settled | {report.orders}, {report.settled} |",
        f"| followers (wait, SSE, WebSocket) | {report.followers} |",
        f"| **lost terminal states** | **{len(report.lost)}** |",
        f"| **double settlements** | **{len(report.double_settlements)}** |",
        f"| **version regressions** | **{len(report.regressions)}** |",
        f"| **answers outside the contract** | **{len(report.bad_answers)}** |",
        f"| requests cut by a SIGKILLed worker (nginx 502) | {report.cut_by_killed_worker} |",
    ]
    rows += [f"| **leaks: {what}** | **{n}** |" for what, n in report.leaks.items()]
    rows += ["", "| settlement -> follower saw it, while | n | p50 ms | p99 ms | max ms |"]
    rows += ["|---|---|---|---|---|"]
    for kind in ["none", *KINDS]:
        values = report.staleness.get(kind)
        if values:
            p50, p99, top = (v * 1000 for v in percentiles(values))
            rows.append(f"| {kind} | {len(values)} | {p50:.0f} | {p99:.0f} | {top:.0f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--faults", type=int, default=None, help="default: one per 3 s")
    parser.add_argument("--rate", type=float, default=4.0, help="new customers per second")
    parser.add_argument("--grace", type=float, default=40.0, help="seconds to see the ends")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    faults = args.faults if args.faults is not None else int(args.duration / 3)
    report = run(seed, args.duration, faults, args.rate, args.grace)
    print(table(report, seed, args.duration))
    for name in ("lost", "double_settlements", "regressions", "bad_answers"):
        for line in getattr(report, name)[:20]:
            print(f"{name}: {line}")
    print(f"nginx errors: {report.proxy_errors}")
    for line in report.service_errors[:20]:
        print(f"service error: {line}")
    if args.json:
        body = {**asdict(report), "requests": dict(report.requests), "faults": dict(report.faults)}
        body.update(seed=seed, duration=args.duration, failures=report.failures)
        args.json.write_text(json.dumps(body, default=list, indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
