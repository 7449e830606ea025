"""Long-poll benchmark: N waits held by ONE gevent worker, each woken by its own signed webhook.

What it measures, on loopback, against the real stack (PostgreSQL, Redis, gunicorn):
- whether one worker holds N concurrent `GET /api/orders/<id>/wait` and answers every one
  correctly (HTTP 200, changed true, paymentStatus completed) once its order is paid;
- webhook-to-answer latency: from just before an order's `POST /api/payhero/callback` is
  written to the moment its wait's answer is fully read (p50/p95/p99/max);
- the webhook rate achieved with at most --concurrency webhooks in flight;
- the worker's RSS per held wait: (RSS while all N are held - RSS before) / N;
- the Redis connections the server opens (they must not grow with N);
- the CPU seconds of this load generator against those of the worker, to show which one is
  the bottleneck.

How: a fresh PostgreSQL database (schema by `flask --app wsgi db upgrade`, dropped at the end),
a private redis-server (so every client in CLIENT LIST but ours is the server's) and gunicorn
with the repo's gunicorn.conf.py and one gevent worker, all on 127.0.0.1. N orders are created,
then N waits are opened with asyncio raw sockets and hand-written HTTP/1.1. They count as held
once the private Redis shows N `order:status:*` channels subscribed and the worker's CPU has
gone quiet. Then one signed webhook per order is fired over --concurrency keep-alive
connections. Everything started here is stopped in `finally` blocks, on error and Ctrl-C too.

Run from the repo root: .venv/bin/python bench/longpoll.py [--orders N] [--concurrency 20]
[--timeout-ms 60000]. The exit code is non-zero unless every wait got a correct answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import platform
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import redis.asyncio as aioredis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, fresh_database  # noqa: E402

# One load generator plays every client from one address: per-address limits are off.
NO_ABUSE_LIMITS = {"ORDER_CREATE_RATE_LIMIT": "", "WAITS_PER_CLIENT": "0", "WAITS_PER_ORDER": "0"}

HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_CLIENT_NAME = "longpoll-bench"  # our Redis connections, left out of the server's count
CHANNEL_PATTERN = "order:status:*"
ORDER_AMOUNT = 300

HOLD_BOUND_S = 60.0  # longest wait for the server to hold all N waits
IDLE_BOUND_S = 20.0  # longest wait for the worker's CPU to go quiet once they are held
START_BOUND_S = 30.0  # longest wait for redis-server or gunicorn to answer
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0  # one order creation or one webhook
ANSWER_SLACK_S = 30.0  # beyond the wait's own timeout, before we give up on an answer
CONNECTS_IN_FLIGHT = 200  # stays below the listen backlog
FD_HEADROOM = 200


# -- process resources ---------------------------------------------------------------------


def raise_nofile_limit() -> int:
    """Raise our soft open-files limit to the hard one; children (gunicorn) inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is state
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    kids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        kids += [int(kid) for kid in children.read_text().split()]
    if kids:
        return kids
    for status in Path("/proc").glob("[0-9]*/status"):  # kernels without the children file
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                kids.append(int(status.parent.name))
        except OSError:
            continue
    return kids


def worker_pid(master: int) -> int:
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        kids = children_of(master)
        if len(kids) == 1:
            return kids[0]
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn master {master} has no single worker: {children_of(master)}")


def open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return " / ".join(line.split()[3:5]) + " (soft / hard)"
    return "unknown"


def socket_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# -- the servers ---------------------------------------------------------------------------


@contextmanager
def process_group(args: list[str], **popen) -> Iterator[subprocess.Popen]:
    """Run a command in a session of its own; stop its whole process group on exit."""
    proc = subprocess.Popen(args, start_new_session=True, **popen)
    try:
        yield proc
    finally:
        stop_group(proc)


# SIGTERM first (graceful); gunicorn then waits up to graceful_timeout for held requests, so
# after a while SIGQUIT (its quick shutdown, which still reaps the worker), SIGKILL last.
STOP_SIGNALS = ((signal.SIGTERM, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0))


def stop_group(proc: subprocess.Popen) -> None:
    for sig, grace_s in STOP_SIGNALS:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            continue


def wait_for(ready, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_BOUND_S
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {START_BOUND_S}s")
        time.sleep(0.05)


@contextmanager
def private_redis() -> Iterator[str]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly"]
    args += ["no", "--loglevel", "warning", "--maxclients", "18000"]
    with process_group(args, stdout=subprocess.DEVNULL) as proc:
        wait_for(lambda: redis_answers(port), f"redis-server on {port}", proc)
        yield f"redis://{HOST}:{port}/0"


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Server(NamedTuple):
    port: int
    master: subprocess.Popen
    worker: int
    log: Path

    def changes(self) -> list[str]:
        """What happened to the gunicorn processes since start, if anything."""
        if self.master.poll() is not None:
            return [f"gunicorn master exited with code {self.master.returncode}"]
        workers = children_of(self.master.pid)
        return [] if workers == [self.worker] else [f"worker {self.worker} gone; now {workers}"]


@contextmanager
def gunicorn(env: dict) -> Iterator[Server]:
    """gunicorn with the repo's gunicorn.conf.py and ONE gevent worker on a free port."""
    port = free_port()
    args = [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"]
    args += ["-b", f"{HOST}:{port}", "-w", "1", "wsgi:app"]
    with tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log") as log:
        popen = dict(cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        with process_group(args, **popen) as proc:
            try:
                wait_for(lambda: healthy(port), f"gunicorn on {port}", proc)
                yield Server(port, proc, worker_pid(proc.pid), Path(log.name))
            except BaseException:
                print_log_tail(Path(log.name), file=sys.stderr)
                raise


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://{HOST}:{port}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


def log_problems(log: Path) -> list[str]:
    """The gunicorn log lines that point at trouble, stops and signals included."""
    marks = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception", "signal", "was sent")
    marks += ("Worker exiting", "Shutting down", "Parent changed")
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(m in line for m in marks)
    ]


def print_log_tail(log: Path, lines: int = 40, file=sys.stdout) -> None:
    """The end of the gunicorn log, without the routine INFO line per webhook."""
    kept = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if " INFO app.payments." not in line
    ]
    print(f"--- gunicorn log, last {lines} lines (per-webhook INFO lines left out) ---", file=file)
    for line in kept[-lines:]:
        print(f"  {line}", file=file)


# -- HTTP/1.1 over raw asyncio sockets -----------------------------------------------------


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Exchange(NamedTuple):
    """One request's fate: when it was written, when its answer was read, and the answer."""

    sent_at: float
    done_at: float
    response: Response | None
    error: str | None


NETWORK_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)
NETWORK_ERRORS += (ValueError,)  # a malformed status line or header


def http_request(
    method: str, path: str, port: int, headers: dict | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        raise ValueError("chunked responses are not supported by this client")
    else:
        body = await reader.read()  # the server closes the connection after the body
    return Response(status, headers, body)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def request_pool(port: int, payloads: list[bytes], concurrency: int) -> list[Exchange]:
    """Send every request over at most `concurrency` keep-alive connections; results in order."""
    results: list[Exchange | None] = [None] * len(payloads)
    jobs = iter(range(len(payloads)))  # shared: each connection takes the next job

    async def connection() -> None:
        conn = None
        try:
            for i in jobs:
                sent_at = time.monotonic()
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(
                            asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_S
                        )
                    sent_at = time.monotonic()
                    conn[1].write(payloads[i])
                    response = await asyncio.wait_for(read_response(conn[0]), REQUEST_TIMEOUT_S)
                    results[i] = Exchange(sent_at, time.monotonic(), response, None)
                    if response.headers.get("connection", "").lower() == "close":
                        conn[1].close()
                        conn = None
                except NETWORK_ERRORS as exc:
                    results[i] = Exchange(sent_at, time.monotonic(), None, describe(exc))
                    if conn is not None:
                        conn[1].close()
                        conn = None
        finally:
            if conn is not None:
                conn[1].close()

    await asyncio.gather(*(connection() for _ in range(min(concurrency, len(payloads)))))
    return results


async def hold(port: int, payload: bytes, gate: asyncio.Semaphore, bound_s: float) -> Exchange:
    """One long poll on its own connection: connect (gated), send, wait for the answer."""
    writer = None
    sent_at = time.monotonic()
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_S
            )
            sent_at = time.monotonic()
            writer.write(payload)
            await writer.drain()
        response = await asyncio.wait_for(read_response(reader), bound_s)
        return Exchange(sent_at, time.monotonic(), response, None)
    except NETWORK_ERRORS as exc:
        return Exchange(sent_at, time.monotonic(), None, describe(exc))
    finally:
        if writer is not None:
            writer.close()


# -- requests of the scenario --------------------------------------------------------------


def order_request(port: int, i: int) -> bytes:
    customer = {"email": f"bench{i}@example.com", "firstName": "Bench", "lastName": f"N{i}"}
    body = json.dumps({"amount": ORDER_AMOUNT, "customer": customer}).encode()
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    return http_request("POST", "/api/orders", port, headers, body)


def wait_request(port: int, order: dict, timeout_ms: int) -> bytes:
    path = f"/api/orders/{order['orderId']}/wait?timeout={timeout_ms}&since=1"
    headers = {"Authorization": f"Bearer {order['accessToken']}", "Connection": "close"}
    return http_request("GET", path, port, headers)


def webhook_body(order: dict, i: int) -> bytes:
    response = {
        "Amount": ORDER_AMOUNT,
        "CheckoutRequestID": f"ws_CO_bench_{i}",
        "ExternalReference": order["orderNumber"],
        "MerchantRequestID": f"bench-{i}",
        "MpesaReceiptNumber": f"SJK{i:07d}",
        "Phone": "254712345678",
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "Status": "Success",
    }
    return json.dumps({"status": True, "response": response}).encode()


def webhook_request(port: int, order: dict, i: int, secret: str) -> bytes:
    body = webhook_body(order, i)
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Signature": f"sha256={signature}",
        "Connection": "keep-alive",
    }
    return http_request("POST", "/api/payhero/callback", port, headers, body)


def create_orders(port: int, n: int, concurrency: int) -> list[dict]:
    payloads = [order_request(port, i) for i in range(n)]
    results = asyncio.run(request_pool(port, payloads, concurrency))
    failed = [r for r in results if r.response is None or r.response.status != 201]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} orders not created; first: {failure(failed[0])}")
    return [json.loads(r.response.body) for r in results]


# -- the load phases -----------------------------------------------------------------------


class CpuMark(NamedTuple):
    generator: float
    worker: float

    @classmethod
    def now(cls, worker: int) -> CpuMark:
        return cls(time.process_time(), cpu_seconds(worker))

    def until(self, later: CpuMark) -> CpuMark:
        return CpuMark(later.generator - self.generator, later.worker - self.worker)


@dataclass
class Load:
    held: int = 0
    subscribers: int = 0
    rss_baseline: int = 0
    rss_held: int = 0
    redis: RedisClients | None = None
    worker_open_files: str = ""
    cpu_hold: CpuMark | None = None
    cpu_deliver: CpuMark | None = None
    webhooks: list[Exchange] | None = None
    answers: list[Exchange] | None = None


async def wait_until_held(store: aioredis.Redis, waits: list[asyncio.Task], n: int) -> int:
    """Poll the private Redis until N channels are subscribed (or the rest have finished)."""
    deadline = time.monotonic() + HOLD_BOUND_S
    while True:
        channels = len(await store.pubsub_channels(CHANNEL_PATTERN))
        finished = sum(task.done() for task in waits)
        if channels + finished >= n or time.monotonic() > deadline:
            return channels
        await asyncio.sleep(0.1)


async def wait_worker_idle(pid: int, window_s: float = 0.5, busy_s: float = 0.02) -> None:
    """Wait until the worker burns less than `busy_s` CPU in a window: every wait is parked."""
    deadline = time.monotonic() + IDLE_BOUND_S
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(window_s)
        if cpu_seconds(pid) - before < busy_s:
            return


async def subscriber_count(store: aioredis.Redis) -> int:
    channels = await store.pubsub_channels(CHANNEL_PATTERN)
    if not channels:
        return 0
    return sum(count for _, count in await store.pubsub_numsub(*channels))


class RedisClients(NamedTuple):
    total: int  # every connection on the private Redis but ours
    of_worker: int  # those whose local port is a socket of the worker process
    by_name: Counter


async def redis_clients(store: aioredis.Redis, worker: int) -> RedisClients:
    clients = [c for c in await store.client_list() if c.get("name") != BENCH_CLIENT_NAME]
    worker_ports = socket_ports(worker)
    of_worker = sum(int(c["addr"].rsplit(":", 1)[1]) in worker_ports for c in clients)
    return RedisClients(len(clients), of_worker, Counter(c.get("name") or "?" for c in clients))


async def run_load(args, server: Server, redis_url: str, orders: list[dict], secret: str) -> Load:
    n, load = len(orders), Load()
    port, worker = server.port, server.worker
    waits_payloads = [wait_request(port, order, args.timeout_ms) for order in orders]
    webhook_payloads = [webhook_request(port, order, i, secret) for i, order in enumerate(orders)]
    store = aioredis.Redis.from_url(redis_url, client_name=BENCH_CLIENT_NAME, decode_responses=True)
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    answer_bound = args.timeout_ms / 1000 + ANSWER_SLACK_S
    waits: list[asyncio.Task] = []
    try:
        load.rss_baseline = rss_kib(worker)
        start = CpuMark.now(worker)
        waits = [asyncio.create_task(hold(port, p, gate, answer_bound)) for p in waits_payloads]
        load.held = await wait_until_held(store, waits, n)
        await wait_worker_idle(worker)
        held = CpuMark.now(worker)
        load.rss_held = rss_kib(worker)
        load.subscribers = await subscriber_count(store)
        load.redis = await redis_clients(store, worker)
        load.worker_open_files = open_files_limit(worker)

        load.webhooks = await request_pool(port, webhook_payloads, args.concurrency)
        await asyncio.wait(waits, timeout=answer_bound)
        load.cpu_hold, load.cpu_deliver = start.until(held), held.until(CpuMark.now(worker))
        load.answers = [task.result() if task.done() else None for task in waits]
        return load
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await store.aclose()


# -- judging and reporting -----------------------------------------------------------------


@dataclass
class Verdict:
    answered: int = 0
    correct: int = 0
    wrong: int = 0
    errors: int = 0
    unanswered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)  # the first few problems, as seen

    def note(self, problem: str) -> None:
        if len(self.samples) < 6:
            self.samples.append(problem)


def judge(load: Load) -> Verdict:
    verdict = Verdict()
    for answer, webhook in zip(load.answers, load.webhooks, strict=True):
        if webhook.response is None or webhook.response.status != 200:
            verdict.note(f"webhook: {failure(webhook)}")
        if answer is None:
            verdict.unanswered += 1
        elif answer.response is None:
            verdict.errors += 1
            verdict.note(f"wait: {answer.error}")
        else:
            judge_answer(verdict, answer, webhook)
    verdict.latencies_ms.sort()
    return verdict


def judge_answer(verdict: Verdict, answer: Exchange, webhook: Exchange) -> None:
    verdict.answered += 1
    body = parse_json(answer.response.body)
    verdict.sources[body.get("source", "(none)")] += 1
    if is_paid_answer(answer.response.status, body):
        verdict.correct += 1
        verdict.latencies_ms.append((answer.done_at - webhook.sent_at) * 1000)
    else:
        verdict.wrong += 1
        verdict.note(f"wait: {failure(answer)}")


def failure(exchange: Exchange) -> str:
    if exchange.response is None:
        return exchange.error
    return f"HTTP {exchange.response.status} {exchange.response.body[:200]!r}"


def parse_json(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_paid_answer(status: int, body: dict) -> bool:
    return (
        status == 200 and body.get("changed") is True and body.get("paymentStatus") == "completed"
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def machine() -> list[tuple[str, str]]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return [
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU model", model),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("kernel", platform.release()),
        ("load average at start", " ".join(Path("/proc/loadavg").read_text().split()[:3])),
    ]


def webhook_rate(webhooks: list[Exchange]) -> tuple[int, float]:
    ok = sum(w.response is not None and w.response.status == 200 for w in webhooks)
    span = max(w.done_at for w in webhooks) - min(w.sent_at for w in webhooks)
    return ok, len(webhooks) / span if span > 0 else float("nan")


def report(args, load: Load, verdict: Verdict, machine_rows, problems: list[str]) -> str:
    n = len(load.answers)
    lat = verdict.latencies_ms
    ok_webhooks, rate = webhook_rate(load.webhooks)
    per_wait = (load.rss_held - load.rss_baseline) / load.held if load.held else float("nan")
    names = ", ".join(f"{name} {count}" for name, count in sorted(load.redis.by_name.items()))
    last_answer = max((a.done_at for a in load.answers if a), default=float("nan"))
    first_to_last = last_answer - min(w.sent_at for w in load.webhooks)
    rows = [
        *machine_rows,
        ("", ""),
        ("orders (N)", str(n)),
        ("wait timeout / webhook concurrency", f"{args.timeout_ms} ms / {args.concurrency}"),
        ("waits held (channels subscribed)", f"{load.held} (subscribers {load.subscribers})"),
        ("answered", str(verdict.answered)),
        ("correct answers", str(verdict.correct)),
        ("wrong answers", str(verdict.wrong)),
        ("errors / unanswered", f"{verdict.errors} / {verdict.unanswered}"),
        ("webhooks HTTP 200", f"{ok_webhooks} of {len(load.webhooks)}"),
        (
            "webhook->answer p50 / p95 / p99 / max",
            " / ".join(f"{percentile(lat, p):.1f}" for p in (50, 95, 99, 100)) + " ms",
        ),
        ("first webhook -> last answer", f"{first_to_last:.2f} s"),
        ("webhooks per second", f"{rate:.0f}"),
        ("worker open-files limit", load.worker_open_files),
        ("worker RSS baseline / held", f"{load.rss_baseline} / {load.rss_held} KiB"),
        ("RSS per held wait", f"{per_wait:.1f} KiB"),
        ("Redis clients of the server", f"{load.redis.total} ({names})"),
        ("Redis clients per worker (1 worker)", str(load.redis.of_worker)),
        ("answer sources", ", ".join(f"{k} {v}" for k, v in verdict.sources.most_common())),
        ("CPU s open+hold: generator / worker", cpu_pair(load.cpu_hold)),
        ("CPU s webhooks+answers: generator / worker", cpu_pair(load.cpu_deliver)),
        ("gunicorn problems (exits, log warnings/errors)", str(len(problems))),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" if label else "" for label, value in rows]
    lines += [f"  problem: {sample}" for sample in verdict.samples]
    return "\n".join(lines)


def cold_report(count: int, verdict: Verdict) -> str:
    lat = verdict.latencies_ms
    figures = " / ".join(f"{percentile(lat, p):.1f}" for p in (50, 95, 99, 100))
    return (
        f"cold worker, first round of {count} (not in the figures above): "
        f"{verdict.correct} correct, webhook->answer p50 / p95 / p99 / max {figures} ms"
    )


def cpu_pair(mark: CpuMark) -> str:
    return f"{mark.generator:.2f} / {mark.worker:.2f}"


# -- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="N: orders, waits, webhooks")
    parser.add_argument("--concurrency", type=int, default=20, help="webhooks in flight")
    parser.add_argument("--timeout-ms", type=int, default=60000, help="timeout of each wait")
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="orders of a first, separately reported round on the cold worker (0: none)",
    )
    args = parser.parse_args()
    if args.orders < 1 or args.concurrency < 1 or args.timeout_ms < 1 or args.warmup < 0:
        parser.error("--orders, --concurrency and --timeout-ms must be positive")
    return args


def run(args) -> int:
    fd_limit = raise_nofile_limit()
    if args.orders + args.concurrency + FD_HEADROOM > fd_limit:
        raise SystemExit(f"open-files limit {fd_limit} is too low for {args.orders} waits")
    machine_rows = machine()
    secret = secrets.token_hex(16)
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(PG_ADMIN_URL, "orderwait_bench"))
        redis_url = stack.enter_context(private_redis())
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "WEBHOOK_SECRET": secret,
            **NO_ABUSE_LIMITS,
        }
        server = stack.enter_context(gunicorn(env))
        print(
            f"gunicorn master {server.master.pid}, worker {server.worker}; creating orders",
            flush=True,
        )
        cold = None
        if args.warmup:
            # The first requests of a fresh worker pay one-time costs (SQL compilation, new
            # database connections): measured and shown apart from the steady state.
            warm_orders = create_orders(server.port, args.warmup, args.concurrency)
            cold = judge(asyncio.run(run_load(args, server, redis_url, warm_orders, secret)))
            print(f"warm-up round of {args.warmup} done", flush=True)
        orders = create_orders(server.port, args.orders, args.concurrency)
        print(f"{len(orders)} orders created; holding waits", flush=True)
        load = asyncio.run(run_load(args, server, redis_url, orders, secret))
        verdict = judge(load)
        problems = server.changes() + log_problems(server.log)
        print(report(args, load, verdict, machine_rows, problems))
        if cold is not None:
            print(cold_report(args.warmup, cold))
        passed = verdict.correct == args.orders and (cold is None or cold.correct == args.warmup)
        if problems or not passed:
            print_log_tail(server.log)
    return 0 if passed else 1


def main() -> int:
    args = parse_args()
    # A SIGTERM to the benchmark unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
