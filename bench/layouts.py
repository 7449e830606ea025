"""Redis layouts benchmark (`make bench BENCH_ARGS=--cluster`): the same load on one Redis and
on a Redis Cluster, with one and two gevent workers, side by side in one table.

Each layout gets its own private Redis (one redis-server, or a cluster of 3 primaries and 3
replicas on loopback, joined by `redis-cli --cluster create`) and its own gunicorn with N
gevent workers, against one fresh PostgreSQL database, driven by longpoll.py's raw-socket
generator. Shapes, as in longpoll.py:
- spread: N orders, one held wait each, then one signed webhook each, --concurrency in
  flight: every wait answered correctly; webhook-to-answer p50/p99; webhooks per second;
- fan-out: F waits on one order, then its webhook: the last answer's time;
- sustained: M webhooks nobody waits on: webhooks per second.
Waits count as held once the workers' `waits_held` gauge (summed over workers) and the
subscribed order channels (over every primary) show them all and every worker's CPU has gone
quiet. Also shown: each layout's Redis connections per worker, by client name, and the CPU
seconds of every worker. The generator runs in this one process on the same two cores: its
CPU seconds are printed too, so the ceiling shows.

Each layout first runs a cold round of --warmup waits, not counted.

Run: .venv/bin/python bench/longpoll.py --cluster [--orders 1000] [--fanout 1000]
[--sustained 2000] [--concurrency 20] [--warmup 100]
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import redis

from bench.longpoll import (
    BENCH_CLIENT_NAME,
    CHANNEL_PATTERN,
    HELD_POLL_S,
    HOLD_BOUND_S,
    LONG_WAITS,
    NO_ABUSE_LIMITS,
    PG_ADMIN_URL,
    QUIET_BACKGROUND,
    REQUEST_TIMEOUT_S,
    HeldSet,
    Server,
    Verdict,
    accepted,
    cpu_seconds,
    create_orders,
    fetch,
    fresh_database,
    gunicorn,
    judge,
    machine,
    metric_value,
    paid_answer,
    percentile,
    private_redis,
    progress,
    rate_per_s,
    request_pool,
    wait_request,
    webhook_request,
)
from tests.support.cluster import ClusterSetup

SHARDS = 3
LAYOUTS = (
    ("one Redis", False, 1),
    ("one Redis", False, 2),
    ("cluster", True, 1),
    ("cluster", True, 2),
)
IDLE_BOUND_S = 20.0


@dataclass
class Figures:
    """One layout's results."""

    name: str
    spread: Verdict | None = None
    spread_rate: float = 0.0
    fanout: Verdict | None = None
    sustained_rate: float = 0.0
    sustained_ok: str = ""
    redis_per_worker: Counter = field(default_factory=Counter)
    worker_cpu_s: list[float] = field(default_factory=list)
    generator_cpu_s: float = 0.0
    problems: list[str] = field(default_factory=list)


class Layout:
    """A Redis layout started for the run: how the app reaches it, and how to look inside."""

    def __init__(self, cluster: ClusterSetup | None, url: str | None):
        self.cluster = cluster
        self.url = url

    def env(self) -> dict:
        if self.cluster is None:
            return {"REDIS_URL": self.url}
        return {"REDIS_URL": "redis://cluster/0", "REDIS_CLUSTER_NODES": self.cluster.addresses}

    def primaries(self) -> list[redis.Redis]:
        if self.cluster is None:
            return [redis.Redis.from_url(self.url, decode_responses=True)]
        return [redis.Redis(port=port, decode_responses=True) for port in self.cluster.primaries()]

    def nodes(self) -> list[redis.Redis]:
        if self.cluster is None:
            return self.primaries()
        return [node.client() for node in self.cluster.alive()]

    def subscribed(self) -> int:
        """Order channels subscribed now, on every primary."""
        command = "PUBSUB SHARDCHANNELS" if self.cluster else "PUBSUB CHANNELS"
        return sum(len(node.execute_command(command, CHANNEL_PATTERN)) for node in self.primaries())

    def clients_by_name(self) -> Counter:
        names = Counter()
        for node in self.nodes():
            for client in node.client_list():
                if client.get("name") != BENCH_CLIENT_NAME:
                    names[client.get("name") or "?"] += 1
        return names


@contextmanager
def started(cluster: bool) -> Iterator[Layout]:
    if not cluster:
        with private_redis() as url:
            yield Layout(None, url)
        return
    setup = ClusterSetup(SHARDS)
    try:
        yield Layout(setup, None)
    finally:
        setup.stop()


async def metric(server: Server, name: str) -> float:
    return metric_value((await fetch(server.port, "/metrics")).body.decode(), name)


async def wait_connected(server: Server, workers: int) -> None:
    deadline = time.monotonic() + 30
    while await metric(server, "orderwait_hub_connected") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers' hubs did not connect within 30 s")
        await asyncio.sleep(0.1)


async def wait_held(server: Server, layout: Layout, held: HeldSet, n: int, channels: int) -> None:
    deadline = time.monotonic() + HOLD_BOUND_S
    while time.monotonic() < deadline:
        holding = await metric(server, "orderwait_waits_held")
        if holding + held.finished >= n and layout.subscribed() >= channels:
            break
        await asyncio.sleep(HELD_POLL_S)
    await wait_idle(server)


async def wait_idle(server: Server, window_s: float = 0.5, busy_s: float = 0.02) -> None:
    deadline = time.monotonic() + IDLE_BOUND_S
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in server.workers)
        await asyncio.sleep(window_s)
        if sum(cpu_seconds(pid) for pid in server.workers) - before < busy_s * len(server.workers):
            return


async def hold_then_trigger(
    server: Server, layout: Layout, waits: list[bytes], triggers: list[bytes], args, channels
) -> tuple[list, list]:
    held = HeldSet(waits)
    try:
        held.open(server.port)
        await wait_held(server, layout, held, len(waits), channels)
        sent = await request_pool(server.port, triggers, args.concurrency)
        await held.wait(args.timeout_ms / 1000 + REQUEST_TIMEOUT_S)
        return held.exchanges(), sent
    finally:
        await held.close()


def measure(server: Server, layout: Layout, figures: Figures, args, secret: str) -> None:
    """The three shapes (create_orders runs an event loop of its own: no loop around this)."""
    port = server.port
    asyncio.run(wait_connected(server, len(server.workers)))

    def spread(n: int) -> tuple[list, list]:
        """n orders, one held wait each, then one webhook each."""
        orders = create_orders(port, n, args.concurrency)
        waits = [wait_request(port, o, args.timeout_ms) for o in orders]
        webhooks = [webhook_request(port, o, secret) for o in orders]
        return asyncio.run(hold_then_trigger(server, layout, waits, webhooks, args, n))

    if args.warmup:
        # A fresh worker's first requests pay one-time costs (SQL compilation, connections).
        progress(f"{figures.name}: cold round of {args.warmup}, not counted")
        spread(args.warmup)
    progress(f"{figures.name}: spread of {args.orders}")
    answers, webhooks = spread(args.orders)
    figures.redis_per_worker = Counter(
        {name: count / len(server.workers) for name, count in layout.clients_by_name().items()}
    )
    figures.spread = judge(answers, webhooks, paid_answer)
    figures.spread_rate = rate_per_s(webhooks)
    progress(f"{figures.name}: fan-out of {args.fanout}")
    (order,) = create_orders(port, 1, 1)
    answers, webhooks = asyncio.run(
        hold_then_trigger(
            server,
            layout,
            [wait_request(port, order, args.timeout_ms)] * args.fanout,
            [webhook_request(port, order, secret)],
            args,
            channels=1,
        )
    )
    figures.fanout = judge(answers, webhooks, paid_answer)
    progress(f"{figures.name}: sustained {args.sustained}")
    orders = create_orders(port, args.sustained, args.concurrency)
    webhooks = asyncio.run(
        request_pool(port, [webhook_request(port, o, secret) for o in orders], args.concurrency)
    )
    figures.sustained_rate = rate_per_s(webhooks)
    figures.sustained_ok = f"{accepted(webhooks)} of {len(webhooks)}"


def run_layout(name: str, cluster: bool, workers: int, base_env: dict, args) -> Figures:
    figures = Figures(f"{name}, {workers} worker{'s' * (workers > 1)}")
    with ExitStack() as stack:
        progress(f"{figures.name}: starting")
        layout = stack.enter_context(started(cluster))
        server = stack.enter_context(gunicorn({**base_env, **layout.env()}, workers=workers))
        cpu_before = [cpu_seconds(pid) for pid in server.workers]
        generator_before = time.process_time()
        measure(server, layout, figures, args, base_env["WEBHOOK_SECRET"])
        figures.worker_cpu_s = [
            cpu_seconds(pid) - before
            for pid, before in zip(server.workers, cpu_before, strict=True)
        ]
        figures.generator_cpu_s = time.process_time() - generator_before
        figures.problems = server.changes()
    return figures


FIGURES = (
    ("spread: waits answered correctly", lambda f: f.spread.answered_text()),
    (
        "spread: webhook -> answer p50 / p99 ms",
        lambda f: (
            f"{percentile(f.spread.latencies_ms, 50):.1f} / "
            f"{percentile(f.spread.latencies_ms, 99):.1f}"
        ),
    ),
    ("spread: webhooks per second", lambda f: f"{f.spread_rate:.0f}"),
    (
        "fan-out: webhook -> last answer",
        lambda f: f"{f.fanout.last_answer_s:.3f} s ({f.fanout.answered_text()})",
    ),
    ("sustained: webhooks per second", lambda f: f"{f.sustained_rate:.0f} ({f.sustained_ok})"),
    (
        "Redis connections per worker: hub + commands",
        lambda f: (
            f"{f.redis_per_worker['orderwait:hub']:g} + {f.redis_per_worker['orderwait:cmd']:g}"
        ),
    ),
    (
        "CPU s: each worker; generator",
        lambda f: "/".join(f"{s:.1f}" for s in f.worker_cpu_s) + f"; {f.generator_cpu_s:.1f}",
    ),
)


def grid(results: list[Figures]) -> str:
    """A Markdown table: one row per figure, one column per layout."""
    cells = [("figure", *(f.name for f in results))]
    cells += [(label, *(value(f) for f in results)) for label, value in FIGURES]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]

    def line(row) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def run(args, secret: str) -> int:
    base_env = {
        "WEBHOOK_SECRET": secret,
        **NO_ABUSE_LIMITS,
        **QUIET_BACKGROUND,
        **LONG_WAITS,
    }
    machine_rows = machine()
    results = []
    with fresh_database(PG_ADMIN_URL, "orderwait_bench") as database_url:
        for name, cluster, workers in LAYOUTS:
            env = {**base_env, "DATABASE_URL": database_url}
            results.append(run_layout(name, cluster, workers, env, args))
    width = max(len(label) for label, _ in machine_rows)
    lines = [f"{label:<{width}}  {value}" for label, value in machine_rows]
    lines += ["", grid(results), ""]
    lines.append(
        f"note: spread N={args.orders}, fan-out F={args.fanout}, sustained M={args.sustained}, "
        f"{args.concurrency} webhooks in flight; cluster: {SHARDS} primaries, {SHARDS} replicas"
    )
    passed = True
    for figures in results:
        for verdict in (figures.spread, figures.fanout):
            if verdict is not None and not verdict.all_correct:
                passed = False
                lines += [f"problem, {figures.name}: {s}" for s in verdict.samples]
        lines += [f"problem, {figures.name}: {p}" for p in figures.problems]
        passed = passed and not figures.problems
    print("\n".join(lines))
    return 0 if passed else 1
