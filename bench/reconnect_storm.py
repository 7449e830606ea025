"""Reconnect storms: how fast the clients of a stopping instance come back, with and without
the spread of SHUTDOWN_RECONNECT_WINDOW_MS.

For each window: starts gunicorn (one gevent worker, PostgreSQL, Redis) holding W waits,
and a second instance; stops the first gracefully (SIGTERM, as a deploy does). Each client
does what orderwait.js does with the shutdown answer: waits its `retryInMs`, then asks the
second instance again. Prints, per window, the peak rate of those returns (the most in any
100 ms, as a rate per second) and when they came (p50, p99, last, after the SIGTERM).

Run from the repo root: .venv/bin/python bench/reconnect_storm.py [--waits 1000]
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
from tests.support.live import create, wait  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BUCKET_S = 0.1


def held(server) -> int:
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]["parked"]


def returns_after_stop(env: dict, waits: int) -> list[float]:
    """Seconds from the SIGTERM to each client's return, one per held wait."""
    with ExitStack() as stack:
        stopping = servers.LiveServer(env)
        stack.callback(stopping.stop)
        serving = servers.LiveServer(env)
        stack.callback(serving.stop)
        orders = [create(stopping) for _ in range(waits)]
        returned: list[float] = []
        stopped_at = [0.0]

        def client(order: dict) -> None:
            answer = wait(stopping, order, timeout_ms=60_000).json()
            assert answer["source"] == "shutdown", answer
            gevent.sleep(answer.get("retryInMs", 0) / 1000)
            returned.append(time.monotonic() - stopped_at[0])
            requests.get(f"{serving.url}/api/orders/{order['orderId']}/wait?timeout=0", timeout=10)

        clients = [gevent.spawn(client, order) for order in orders]
        servers.wait_until(lambda: held(stopping) == waits, 60, message="waits held")
        stopped_at[0] = time.monotonic()
        stopping.terminate()
        gevent.joinall(clients, timeout=60, raise_error=True)
        return sorted(returned)


def summary(returned: list[float]) -> tuple[float, float, float, float]:
    buckets: dict[int, int] = {}
    for at in returned:
        buckets[int(at / BUCKET_S)] = buckets.get(int(at / BUCKET_S), 0) + 1
    peak = max(buckets.values()) / BUCKET_S

    def at(q: float) -> float:
        return returned[min(int(q * len(returned)), len(returned) - 1)] * 1000

    return peak, at(0.5), at(0.99), returned[-1] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--windows", default="0,2000", help="SHUTDOWN_RECONNECT_WINDOW_MS values")
    args = parser.parse_args()
    rows = []
    with servers.fresh_database(ADMIN_URL, "orderwait_storm") as database_url:
        redis_server = servers.RedisServer()
        try:
            for window in (int(w) for w in args.windows.split(",")):
                env = {
                    "DATABASE_URL": database_url,
                    "REDIS_URL": redis_server.url,
                    "WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "SHUTDOWN_RECONNECT_WINDOW_MS": str(window),
                    # One load generator plays every client from one address.
                    "ORDER_CREATE_RATE_LIMIT": "",
                    "WAITS_PER_CLIENT": "0",
                }
                rows.append((window, *summary(returns_after_stop(env, args.waits))))
        finally:
            redis_server.stop()
    print(f"\n{args.waits} held waits, their instance stopped (SIGTERM); returns to the other:\n")
    print("| reconnect window | peak returns/s (100 ms) | p50 ms | p99 ms | last ms |")
    print("|---|---|---|---|---|")
    for window, peak, p50, p99, last in rows:
        print(f"| {window} ms | {peak:,.0f} | {p50:,.0f} | {p99:,.0f} | {last:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
