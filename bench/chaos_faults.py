"""A seeded schedule of faults, and the injector that plays it on a Deployment.

The schedule (kind, start, duration, target) comes from the seed alone, so a run is
reproduced with the same seed. Faults on different parts overlap freely; a fault on a part
another fault is still acting on starts when that one ends (one rolling restart at a time,
as a deploy does it; Redis is not frozen while it is down).
"""

from __future__ import annotations

import os
import random
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass

import gevent
from gevent.lock import Semaphore

from bench.chaos_deployment import Deployment
from bench.chaos_history import Fault

# kind: (the part it acts on, shortest and longest duration in seconds). "deploy" is one
# part for all instances: a rolling deploy restarts one instance at a time.
KINDS = {
    "redis-kill": ("redis", 0.5, 3.0),
    "redis-freeze": ("redis", 0.5, 4.0),
    "worker-kill": ("instance", 0.0, 0.0),
    "rolling-restart": ("deploy", 0.0, 0.0),
    "pg-terminate": ("postgres", 0.0, 0.0),
    "pg-restart": ("postgres", 0.0, 0.0),
    "redis-latency": ("link", 2.0, 6.0),
    "redis-partition": ("link", 1.0, 5.0),
}
LATENCY_S = (0.05, 0.3)  # added to every chunk through an instance's link to Redis


@dataclass(frozen=True)
class Planned:
    kind: str
    at: float  # seconds after the campaign's start
    duration: float
    instance: int  # which instance (or its link) for the kinds that act on one
    latency: float


def schedule(seed: int, duration: float, count: int, instances: int) -> list[Planned]:
    """`count` faults over the campaign, every kind in turn (so a short campaign has some of
    each), at seeded random times; the first and last few seconds are left quiet."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    planned = []
    for n in range(count):
        kind = kinds[n % len(kinds)]
        _part, shortest, longest = KINDS[kind]
        planned.append(
            Planned(
                kind=kind,
                at=rng.uniform(2.0, max(2.0, duration - 8.0)),
                duration=rng.uniform(shortest, longest),
                instance=rng.randrange(instances),
                latency=rng.uniform(*LATENCY_S),
            )
        )
    return sorted(planned, key=lambda p: p.at)


class Injector:
    def __init__(self, deployment: Deployment, seed: int):
        self.deployment = deployment
        self.rng = random.Random(seed + 1)  # which worker a kill takes
        self.done: list[Fault] = []
        self.refused: list[str] = []  # faults that could not be applied, and why
        self._parts: dict[str, Semaphore] = {}

    def run(self, planned: list[Planned], started: float) -> None:
        """Play the schedule from `started` (time.monotonic()); returns when all are over."""
        greenlets = []
        for fault in planned:
            delay = started + fault.at - time.monotonic()
            greenlets.append(gevent.spawn_later(max(0.0, delay), self._apply, fault))
        gevent.joinall(greenlets)

    def _parts_of(self, fault: Planned) -> list[Semaphore]:
        part = KINDS[fault.kind][0]
        names = [f"{part}{fault.instance}" if part in ("instance", "link") else part]
        if part == "deploy":  # a worker is not killed while its instance is being replaced
            names.append(f"instance{fault.instance}")
        return [self._parts.setdefault(name, Semaphore()) for name in names]

    def _apply(self, fault: Planned) -> None:
        with ExitStack() as holding:
            for part in self._parts_of(fault):  # always in this order: no deadlock
                holding.enter_context(part)
            began = time.time()
            target = getattr(self, "_" + fault.kind.replace("-", "_"))(fault)
            self.done.append(Fault(fault.kind, target, began, time.time()))

    # -- the faults ------------------------------------------------------------------------

    def _redis_kill(self, fault: Planned) -> str:
        redis = self.deployment.redis
        redis.proc.kill()
        redis.proc.wait(10)
        gevent.sleep(fault.duration)
        self.deployment.restart_redis()
        return f"redis down {fault.duration:.1f}s"

    def _redis_freeze(self, fault: Planned) -> str:
        self.deployment.redis.freeze()
        gevent.sleep(fault.duration)
        self.deployment.redis.thaw()
        return f"redis frozen {fault.duration:.1f}s"

    def _worker_kill(self, fault: Planned) -> str:
        instance = self.deployment.instances[fault.instance]
        pids = instance.worker_pids()
        if not pids:
            self.refused.append(f"worker-kill: {instance.name} had no worker")
            return f"{instance.name}: no worker"
        pid = self.rng.choice(sorted(pids))
        instance.killed_pids.append(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return f"{instance.name} worker {pid}"

    def _rolling_restart(self, fault: Planned) -> str:
        instance = self.deployment.instances[fault.instance]
        began = time.monotonic()
        instance.stop_gracefully()
        instance.start()
        return f"{instance.name} restarted in {time.monotonic() - began:.1f}s"

    def _pg_terminate(self, _fault: Planned) -> str:
        return f"{self.deployment.postgres.terminate_backends()} backends"

    def _pg_restart(self, _fault: Planned) -> str:
        began = time.monotonic()
        self.deployment.postgres.restart()
        return f"restarted in {time.monotonic() - began:.1f}s"

    def _redis_latency(self, fault: Planned) -> str:
        link = self.deployment.instances[fault.instance].link
        link.delay = fault.latency
        gevent.sleep(fault.duration)
        link.delay = 0.0
        return f"app{fault.instance + 1} +{fault.latency * 1000:.0f}ms {fault.duration:.1f}s"

    def _redis_partition(self, fault: Planned) -> str:
        link = self.deployment.instances[fault.instance].link
        link.pause()
        gevent.sleep(fault.duration)
        link.resume()
        return f"app{fault.instance + 1} cut off {fault.duration:.1f}s"
