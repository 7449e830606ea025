"""Webhooks per second at 1 and N workers, with the CPU of every process that does the work,
for `longpoll.py --shapes scaling [--workers N]`.

Each worker count gets a fresh gunicorn on the run's database and Redis; the same number of
orders nobody waits on is paid, one signed webhook each over --concurrency keep-alive
connections. Beside the rate: the CPU seconds, over the webhooks' wall time, of the
workers (summed), of every PostgreSQL process, of every redis-server and of this
generator, so that where the ceiling is shows (on 2 cores, 2 workers share them with
PostgreSQL and the generator).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import NamedTuple

from bench import longpoll as lp

TARGET_SCALING = 1.4


def pids_named(name: str) -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = lp.cpu_seconds(pid)
        except OSError:
            continue  # a process that ended meanwhile
    return found


def cpu_since(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU seconds of the processes running now since `before` (a new one: all of its). One
    that ended in between is left out: a backend of the gunicorn stopped before this one."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())


class Measure(NamedTuple):
    workers: int
    rate: float
    accepted: int
    sent: int
    wall_s: float
    cpu: dict[str, float]  # process kind -> CPU seconds during the webhooks


def measure(env: dict, workers: int, args) -> Measure:
    with lp.gunicorn(env, workers=workers) as server:
        orders = lp.create_orders(server.port, args.sustained, args.concurrency)
        payloads = [lp.webhook_request(server.port, o, env["WEBHOOK_SECRET"]) for o in orders]
        kinds = {
            "workers": lambda: list(server.workers),
            "postgres": lambda: pids_named("postgres"),
            "redis": lambda: pids_named("redis-server"),
        }
        before = {kind: cpu_by_pid(pids()) for kind, pids in kinds.items()}
        generator_before, started = time.process_time(), time.monotonic()
        webhooks = asyncio.run(lp.request_pool(server.port, payloads, args.concurrency))
        wall = time.monotonic() - started
        cpu = {kind: cpu_since(before[kind], cpu_by_pid(pids())) for kind, pids in kinds.items()}
        cpu["generator"] = time.process_time() - generator_before
        if server.changes():
            raise RuntimeError(f"gunicorn changed under load: {server.changes()}")
    return Measure(
        workers, lp.rate_per_s(webhooks), lp.accepted(webhooks), len(webhooks), wall, cpu
    )


def run(env: dict, args) -> list[Measure]:
    counts = [1] if args.workers == 1 else [1, args.workers]
    return [measure(env, n, args) for n in counts]


def rows(measures: list[Measure]) -> list[lp.Row]:
    table = []
    for m in measures:
        cpu = " / ".join(f"{m.cpu[k]:.2f}" for k in ("workers", "postgres", "redis", "generator"))
        table += [
            lp.Row(
                f"webhooks per second, {m.workers} worker(s) ({m.accepted} of {m.sent} HTTP 200)",
                f"{m.rate:.0f}",
            ),
            lp.Row(
                f"CPU s workers / postgres / redis / generator, {m.workers} worker(s)",
                f"{cpu} in {m.wall_s:.2f} s",
            ),
        ]
    if len(measures) == 2:
        ratio = measures[1].rate / measures[0].rate
        table.append(
            lp.Row(
                f"webhook rate, {measures[1].workers} workers / 1",
                f"{ratio:.2f}x",
                f">= {TARGET_SCALING:g}x",
                ratio >= TARGET_SCALING,
            )
        )
    return table
