"""A whole host: W held waits over N workers, opened by several generator processes, then
answered, for `longpoll.py --shapes host [--host-waits 40000] [--host-workers 4]`.

One process may hold no more sockets than its open-files limit (20,000 here), and one source
address reaches one server port from at most the ephemeral port range (about 28,000): so the
waits are split between generator processes of at most --host-per-process waits each, each
connecting from a loopback address of its own (127.0.0.2, .3, ...). gunicorn runs N gevent
workers on the run's database and Redis, their database pools within 60 connections in all
(PostgreSQL allows 100 by default: four default pools of 30 would not fit). The waits are
spread over ORDERS orders (fewer when there are fewer waits); once every worker holds its
share (the `orderwait_waits_held` gauge, summed over the workers by /metrics) and the
workers' CPU is quiet, each order gets its webhook, 20 in flight.

Figures: waits answered correctly (each its order, paid); the first webhook to the last
answer (the kernel's arrival stamps, on the system-wide monotonic clock every process
shares); RSS per held wait over all workers, and each worker's RSS growth and CPU to hold
and to deliver. What was wrong with an answer, and the gunicorn log's warnings, are told.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from collections import Counter
from typing import NamedTuple

from bench import longpoll as lp

ORDERS = 1_000
DATABASE_CONNECTIONS = 60  # for all the host's workers together
TARGET_HOST_WAITS = 40_000


def hold(port: int, payloads: list[bytes], source: str, pipe, bound_s: float) -> None:
    """In a generator process: hold every payload from `source`, say when all are sent, and
    send back each answer's (arrival, correct?) once all are in (or `bound_s` passed)."""
    lp.raise_nofile_limit()

    async def run() -> list[tuple[float, str | None]]:
        held = lp.HeldSet(payloads, source)
        try:
            held.open(port)
            await held.opened()
            pipe.send(("opened", sum(r.error is not None for r in held.requests)))
            await held.wait(bound_s)
            return [(math.nan, "unanswered") if e is None else judged(e) for e in held.exchanges()]
        finally:
            await held.close()

    pipe.send(("answers", asyncio.run(run())))


def judged(exchange: lp.Exchange) -> tuple[float, str | None]:
    """An answer's arrival, and what was wrong with it (None: paid, as it should be)."""
    if exchange.response is None or not lp.paid_answer(0, exchange.response):
        return exchange.done_at, lp.failure(exchange)
    return exchange.done_at, None


class HostRun(NamedTuple):
    waits: int
    workers: int
    processes: int
    correct: int
    last_answer_s: float
    rss_growth_mib: list[float]  # per worker, while the waits were opened and held
    cpu_hold: list[float]
    cpu_deliver: list[float]
    problems: list[str]  # the first few wrong or missing answers, as seen


def held_now(port: int) -> int:
    text = asyncio.run(lp.fetch(port, "/metrics")).body.decode()
    return int(lp.metric_value(text, "orderwait_waits_held"))


def run(env: dict, args) -> HostRun:
    waits, workers = args.host_waits, args.host_workers
    orders_n = min(ORDERS, waits)
    per_worker = math.ceil(waits / workers)
    env = {
        **env,
        "WORKER_CONNECTIONS": str(min(2 * per_worker + lp.FD_HEADROOM, 19_000)),
        # Sized as a host must be: every worker's pool within PostgreSQL's connections
        # (100 by default, some of them the benchmark's own).
        "DATABASE_POOL_SIZE": str(max(2, DATABASE_CONNECTIONS // workers)),
        "DATABASE_MAX_OVERFLOW": "0",
    }
    with lp.gunicorn(env, workers=workers) as server:
        port = server.port
        orders = lp.create_orders(port, orders_n, args.concurrency)
        payloads = [
            lp.wait_request(port, orders[i % orders_n], args.timeout_ms) for i in range(waits)
        ]
        step = args.host_per_process
        slices = [payloads[i : i + step] for i in range(0, waits, step)]
        rss_before = [lp.rss_kib(pid) for pid in server.workers]
        cpu_before = [lp.cpu_seconds(pid) for pid in server.workers]
        spawn = multiprocessing.get_context("spawn")
        pipes, processes = [], []
        bound_s = lp.HOLD_BOUND_S + lp.REQUEST_TIMEOUT_S + lp.ANSWER_SLACK_S
        try:
            for k, part in enumerate(slices):
                mine, theirs = spawn.Pipe()
                source = f"127.0.0.{2 + k}"
                process = spawn.Process(
                    target=hold, args=(port, part, source, theirs, bound_s), daemon=True
                )
                process.start()
                pipes.append(mine)
                processes.append(process)
            for pipe in pipes:
                if not pipe.poll(lp.HOLD_BOUND_S):
                    raise RuntimeError("a generator process did not open its waits in time")
                kind, failed = pipe.recv()
                if failed:
                    raise RuntimeError(f"{failed} waits of a generator process not opened")
            deadline = time.monotonic() + lp.HOLD_BOUND_S
            while held_now(port) < waits and time.monotonic() < deadline:
                time.sleep(lp.HELD_POLL_S)
            for pid in server.workers:
                asyncio.run(lp.wait_worker_idle(pid))
            cpu_held = [lp.cpu_seconds(pid) for pid in server.workers]
            time.sleep(lp.RSS_SETTLE_S)  # as held_shape: past one trim of freed memory
            rss_held = [lp.rss_kib(pid) for pid in server.workers]
            webhooks = [lp.webhook_request(port, o, env["WEBHOOK_SECRET"]) for o in orders]
            triggers = asyncio.run(lp.request_pool(port, webhooks, args.concurrency))
            answers = []
            for pipe in pipes:
                if not pipe.poll(bound_s + 10):
                    raise RuntimeError("a generator process did not report its answers")
                answers += pipe.recv()[1]
            cpu_done = [lp.cpu_seconds(pid) for pid in server.workers]
        finally:
            for process in processes:
                process.join(10)
                if process.is_alive():
                    process.kill()
        if server.changes():
            raise RuntimeError(f"gunicorn changed under load: {server.changes()}")
        logged = lp.log_problems(server.log)
    first_sent = min(t.sent_at for t in triggers)
    arrivals = [at for at, problem in answers if problem is None]
    problems = [problem for _, problem in answers if problem is not None]
    problems += [f"webhook: {lp.failure(t)}" for t in triggers if lp.accepted([t]) == 0]
    problems += [f"gunicorn log: {line}" for line in logged]
    return HostRun(
        waits,
        workers,
        len(slices),
        len(arrivals),
        (max(arrivals) - first_sent) if arrivals else math.nan,
        [(h - b) / 1024 for h, b in zip(rss_held, rss_before, strict=True)],
        [h - b for h, b in zip(cpu_held, cpu_before, strict=True)],
        [d - h for d, h in zip(cpu_done, cpu_held, strict=True)],
        [f"{n} x {problem}" for problem, n in Counter(problems).most_common(6)],
    )


def rows(host: HostRun) -> list[lp.Row]:
    def each(values: list[float], fmt: str) -> str:
        return " / ".join(format(v, fmt) for v in values)

    return [
        lp.Row(
            f"host: held waits answered correctly ({host.workers} workers, "
            f"{host.processes} generator processes)",
            f"{host.correct} of {host.waits}",
            f">= {TARGET_HOST_WAITS:,}",
            host.correct == host.waits and host.correct >= TARGET_HOST_WAITS,
        ),
        lp.Row("host: first webhook -> last answer", f"{host.last_answer_s:.2f} s"),
        lp.Row(
            "host: RSS per held wait, all workers; growth of each (MiB)",
            f"{sum(host.rss_growth_mib) * 1024 / host.waits:.1f} KiB; "
            + each(host.rss_growth_mib, ".1f"),
        ),
        lp.Row("host: CPU s each worker, hold", each(host.cpu_hold, ".2f")),
        lp.Row("host: CPU s each worker, deliver", each(host.cpu_deliver, ".2f")),
    ]
