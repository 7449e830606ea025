"""Reconnect storms: how fast the clients of a stopping instance come back, with and without
the spread of SHUTDOWN_RECONNECT_WINDOW_MS.

For each window: starts gunicorn (one gevent worker, PostgreSQL, Redis) holding W waits,
and a second instance; stops the first gracefully (SIGTERM, as a deploy does). Each client
does what orderwait.js does with the shutdown answer: waits its `retryInMs`, then asks the
second instance again. A client's return is timed as a browser's would be, each on its own
machine: the kernel's stamp of its answer's arrival (bench/kernel_clock.py) plus the delay
it was given, so this one process reading 1,000 answers in turn does not spread them.

Prints, per window, the peak rate of those returns (the most in any
100 ms, as a rate per second) and when they came (p50, p99, last, after the SIGTERM):
medians over --runs runs, the windows alternating, with the range in brackets.

Run from the repo root: make bench-storm [STORM_ARGS="--waits 1000 --runs 5"]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kernel_clock import recv_stamped, stamp_arrivals  # noqa: E402
from tests.support import servers  # noqa: E402
from tests.support.helpers import WEBHOOK_SECRET  # noqa: E402
from tests.support.live import create  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BUCKET_S = 0.1


def held(server) -> int:
    return requests.get(server.url + "/readyz", timeout=5).json()["hub"]["parked"]


def held_wait(server, order: dict) -> tuple[float, dict]:
    """One long poll on a socket of its own: when its answer's last byte arrived (the
    kernel's stamp, time.monotonic()'s clock) and the answer."""
    path = f"/api/orders/{order['orderId']}/wait?since=1&timeout=60000"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {order['accessToken']}\r\n\r\n"
    )
    with socket.socket() as sock:
        stamp_arrivals(sock)
        sock.settimeout(90)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request.encode())
        chunks, arrived_at = [], None
        while True:
            data, stamp = recv_stamped(sock, 1 << 16)
            if not data:  # Connection: close, the answer ends with the connection
                break
            chunks.append(data)
            arrived_at = stamp or time.monotonic()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return arrived_at, json.loads(body)


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
            arrived_at, answer = held_wait(stopping, order)
            assert answer["source"] == "shutdown", answer
            delay_s = answer.get("retryInMs", 0) / 1000
            returned.append(arrived_at + delay_s - stopped_at[0])
            gevent.sleep(max(arrived_at + delay_s - time.monotonic(), 0))
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
    parser.add_argument("--runs", type=int, default=5, help="runs of each window, alternating")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    runs: dict[int, list[tuple[float, ...]]] = {window: [] for window in windows}
    with servers.fresh_database(ADMIN_URL, "orderwait_storm") as database_url:
        redis_server = servers.RedisServer()
        try:
            for run, window in ((r, w) for r in range(args.runs) for w in windows):
                env = {
                    "DATABASE_URL": database_url,
                    "REDIS_URL": redis_server.url,
                    "WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "SHUTDOWN_RECONNECT_WINDOW_MS": str(window),
                    # One load generator plays every client from one address.
                    "ORDER_CREATE_RATE_LIMIT": "",
                    "WAITS_PER_CLIENT": "0",
                }
                runs[window].append(summary(returns_after_stop(env, args.waits)))
                print(
                    f"run {run + 1}, window {window} ms: "
                    + ", ".join(f"{v:,.0f}" for v in runs[window][-1]),
                    file=sys.stderr,
                )
        finally:
            redis_server.stop()
    print(
        f"\n{args.waits} held waits, their instance stopped (SIGTERM); returns to the other;"
        f" medians of {args.runs} runs [min-max]:\n"
    )
    print("| reconnect window | peak returns/s (100 ms) | p50 ms | p99 ms | last ms |")
    print("|---|---|---|---|---|")
    for window in windows:
        cells = [median_range([run[i] for run in runs[window]]) for i in range(4)]
        print(f"| {window} ms | " + " | ".join(cells) + " |")
    return 0


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


if __name__ == "__main__":
    sys.exit(main())
