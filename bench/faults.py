"""Fault figures: what a Redis outage costs the waits of one gevent worker.

Starts gunicorn (one gevent worker, PostgreSQL, a private redis-server) on loopback, holds
W waits on W orders, then:
1. kills Redis and pays a quarter of the orders through the waits' own worker (its failed
   publish makes that worker poll at once) and a quarter through a second instance (seen by
   the next batched poll, FALLBACK_DB_POLL_INTERVAL): the delay from each webhook's 200 to
   its wait's answer;
2. counts the worker's batched fallback polls while nothing else runs, per poll interval
   (one `WHERE id IN (...)` query per poll for up to 500 watched orders; the test suite
   checks the statements themselves);
3. restarts Redis: the time until the worker is back on pub/sub (/readyz), and the
   webhook-to-answer time of a fresh wait then.

Run from the repo root: .venv/bin/python bench/faults.py [--waits 200] [--interval 2.0]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import servers  # noqa: E402
from tests.support.helpers import WEBHOOK_SECRET  # noqa: E402
from tests.support.live import create, pay, wait  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def hub_stats(server) -> dict:
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]


def fallback_polls(server) -> int:
    """The worker's count of batched fallback polls (each one query per 500 watched orders)."""
    return hub_stats(server)["fallbackPolls"]


def pubsub_state(server) -> str:
    return requests.get(server.url + "/readyz", timeout=5).json()["checks"]["pubsub"]


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    pick = lambda p: values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]  # noqa: E731
    return " / ".join(f"{pick(p) * 1000:.0f}" for p in (50, 95, 100)) + " ms"


def run(args) -> list[tuple[str, str]]:
    with ExitStack() as stack:
        database_url = stack.enter_context(servers.fresh_database(ADMIN_URL, "orderwait_faults"))
        redis_server = servers.RedisServer()
        stack.callback(redis_server.stop)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "FALLBACK_DB_POLL_INTERVAL": str(args.interval),
            # One load generator plays every client from one address.
            "ORDER_CREATE_RATE_LIMIT": "",
            "WAITS_PER_CLIENT": "0",
        }
        server = servers.LiveServer(env)  # holds the waits
        stack.callback(server.stop)
        elsewhere = servers.LiveServer(env)  # another host taking webhooks
        stack.callback(elsewhere.stop)

        orders = [create(server) for _ in range(args.waits)]
        timeout_ms = int((args.interval * 4 + 20) * 1000)
        waits = [gevent.spawn(timed_wait, server, o, timeout_ms) for o in orders]
        # Parked: past their first database read and blocked on the hub.
        servers.wait_until(
            lambda: hub_stats(server)["parked"] == args.waits, 30, message="waits parked"
        )

        # 1. Redis killed; a quarter of the orders paid through this worker, a quarter
        #    through the other instance.
        redis_server.stop()
        for instance in (server, elsewhere):
            servers.wait_until(
                lambda i=instance: pubsub_state(i) == "database-polling", 10, message="fallback"
            )
        quarter = args.waits // 4
        local = deliver(server, orders[:quarter], waits[:quarter], args.interval)
        remote = deliver(
            elsewhere, orders[quarter : 2 * quarter], waits[quarter : 2 * quarter], args.interval
        )

        # 2. Fallback polls while nothing else runs.
        window = args.interval * 5
        before = fallback_polls(server)
        time.sleep(window)
        polls = fallback_polls(server) - before
        watched = args.waits - 2 * quarter

        # 3. Redis back.
        restarted = time.monotonic()
        redis_server = servers.RedisServer(redis_server.port)
        stack.callback(redis_server.stop)
        servers.wait_until(
            lambda: pubsub_state(server) == "connected",
            30,
            interval=0.01,
            message="back on pub/sub",
        )
        back_in = time.monotonic() - restarted
        fresh = create(server)
        held = gevent.spawn(wait, server, fresh)
        servers.wait_until(lambda: hub_stats(server)["parked"] >= 1, 10, message="fresh wait")
        sent = time.monotonic()
        pay(server, fresh)
        fresh_answer = held.get(timeout=10).json()
        fresh_latency = time.monotonic() - sent
        gevent.killall(waits)

    return [
        ("waits held (parked)", str(args.waits)),
        ("FALLBACK_DB_POLL_INTERVAL", f"{args.interval:.1f} s"),
        *local.rows("webhook on the waits' worker"),
        *remote.rows("webhook on another instance"),
        (
            "fallback polls in a quiet window",
            f"{polls} in {window:.1f} s "
            f"= {polls / (window / args.interval):.2f} per "
            f"interval, one query each for {watched} orders",
        ),
        ("Redis restart -> back on pub/sub", f"{back_in * 1000:.0f} ms"),
        (
            "then webhook -> answer (source)",
            f"{fresh_latency * 1000:.1f} ms ({fresh_answer['source']})",
        ),
    ]


class Delivered:
    def __init__(self, statuses: list[int], delays: list[float], wrong: int):
        self.statuses, self.delays, self.wrong = statuses, delays, wrong

    def rows(self, label: str) -> list[tuple[str, str]]:
        n = len(self.statuses)
        return [
            (f"{label}: HTTP 200", f"{self.statuses.count(200)} of {n}"),
            (f"{label}: answered correctly", f"{len(self.delays)} of {n} (wrong {self.wrong})"),
            (f"{label}: delay p50 / p95 / max", percentiles(self.delays) if self.delays else "-"),
        ]


def deliver(instance, orders: list[dict], waits: list, interval: float) -> Delivered:
    """Pay the orders through `instance`; time each wait's answer from its webhook's 200."""
    paid_at = {}

    def pay_and_note(order):
        response = pay(instance, order)
        paid_at[order["orderId"]] = time.monotonic()
        return response

    payments = [gevent.spawn(pay_and_note, order) for order in orders]
    gevent.joinall(payments, raise_error=True)
    gevent.joinall(waits, timeout=interval + 10)
    delays, wrong = [], 0
    for greenlet, order in zip(waits, orders, strict=True):
        response, answered_at = greenlet.value if greenlet.ready() else (None, None)
        answer = response.json() if response is not None else {}
        if answer.get("paymentStatus") == "completed" and answer.get("source") == "poll":
            delays.append(answered_at - paid_at[order["orderId"]])
        else:
            wrong += 1
    return Delivered([p.value.status_code for p in payments], delays, wrong)


def timed_wait(server, order: dict, timeout_ms: int):
    """Hold a wait; return its response and the moment it arrived."""
    response = wait(server, order, timeout_ms=timeout_ms)
    return response, time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    rows = run(args)
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
