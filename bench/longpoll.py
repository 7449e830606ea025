"""Long-poll benchmark: one gevent worker against the service's targets, in one table.

Every shape runs in one run against ONE gunicorn with ONE gevent worker (PostgreSQL, a private
redis-server), on loopback, driven by an asyncio raw-socket load generator:

- spread: N orders, one held `GET /api/orders/<id>/wait` each, then one signed webhook each,
  --concurrency in flight. Figures: every wait answered correctly (HTTP 200, changed true,
  paymentStatus completed); webhook-to-answer p50/p99, from just before a webhook is written
  to the last byte of its wait's answer read; webhooks per second; the worker's RSS per held
  wait, (RSS held - RSS before) / N; the Redis connections of the worker; reads of the
  `orders` table per wait, from PostgreSQL's statistics; the worker's own delivery time, from
  the histograms of its /metrics (hub message received -> answer written, and order settled
  -> answer written), as the smallest bucket bound holding 99% of the spread's answers.
- cache hit, with the spread: orders paid while nobody waits, then one wait each with
  since=1, which the cached state answers at once: the reads of `orders` those waits made.
- fan-out: one fresh order, --fanout waits on it, one webhook: from the webhook's send to the
  LAST answer read, and the RSS per held wait (after the spread, the worker reuses memory
  the spread's waits freed, so this one reads low and is not judged).
- memory: --memory-orders M (10,000) waits on M orders, held, then one webhook each, as the
  spread: the RSS per held wait where it is not noise. At the spread's 1,000 the growth is a
  few MiB, and memory the worker freed but did not give back moves it by a few hundred KiB
  from one run to the next.
- sustained: --sustained orders nobody waits on, one signed webhook each over --concurrency
  keep-alive connections: webhooks per second, every one HTTP 200.
- --vs-nchan: spread and fan-out again against a private nginx with the nchan module (one
  worker process, long-poll subscribers, POST publishes, a fresh nginx per shape): RSS per
  held subscriber, publish-to-answer p50/p99, fan-out time, and the app/nchan ratios.
Each shape also reports the CPU seconds of this generator next to those of the server's
worker process, to show which of the two set the pace.

How: a fresh PostgreSQL database (schema by `flask --app wsgi db upgrade`, dropped at the
end), a private redis-server (so every client in CLIENT LIST but ours is the server's) and
gunicorn with the repo's gunicorn.conf.py and one gevent worker, all on 127.0.0.1. Waits count
as held once the hub's `parked` count (/readyz) and the private Redis's subscribed
channels show them all and the worker's CPU has gone quiet. Each held request is a raw
non-blocking socket watched by the asyncio loop, answered when its last byte arrives. Reads
of `orders` are counted as described in OrdersReads and reads_rows. Everything started here
is stopped in `finally` blocks, on error and Ctrl-C too.

Output: the machine, then one table (figure | measured | target | ok?) and a few notes on
stdout; progress on stderr. Exit code 1 when any answer was wrong or missing (a wait, an nchan
subscriber, a webhook or a publish not accepted), 2 when the benchmark could not run; a
missed target alone does not fail the run.

Run from the repo root: .venv/bin/python bench/longpoll.py [--orders 1000] [--fanout N]
[--sustained 2000] [--memory-orders 10000] [--shapes spread,fanout,memory,sustained] [--vs-nchan]
[--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import psycopg2
import redis.asyncio as aioredis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.kernel_clock import recv_stamped, stamp_arrivals  # noqa: E402
from bench.pyspy import Profiler  # noqa: E402
from tests.support.servers import free_port, fresh_database  # noqa: E402

# One load generator plays every client from one address: per-address limits are off.
NO_ABUSE_LIMITS = {"ORDER_CREATE_RATE_LIMIT": "", "WAITS_PER_CLIENT": "0", "WAITS_PER_ORDER": "0"}
# The leader's periodic jobs (statistics refresher, reconciler) read the orders table on their
# own clock. They run once as the worker starts, before anything is measured; pushed past the
# run after that, so the reads counted per wait are the waits' own.
QUIET_BACKGROUND = {"STATS_CACHE_TTL": "7200", "RECONCILE_INTERVAL": "3600"}
# A wait must outlive opening N waits plus N webhooks on a slow day (10,000 webhooks at 250/s
# take 40 s): one answered by its timeout would count as wrong.
LONG_WAITS = {"LONGPOLL_MAX_TIMEOUT_MS": "600000"}
DEFAULT_WORKER_CONNECTIONS = 12000  # gunicorn.conf.py's default

HOST = "127.0.0.1"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_CLIENT_NAME = "longpoll-bench"  # our Redis connections, left out of the server's count
CHANNEL_PATTERN = "order:{*}:status"
ORDER_AMOUNT = 300
# memory, scaling, host: each on a gunicorn of its own
SHAPES = ("spread", "fanout", "memory", "sustained", "scaling", "host")
CACHE_PROBE_ORDERS = 100  # at most: orders paid before anyone waits on them
MEMORY_WARMUP = 200  # waits (and webhooks) on the memory shape's worker before it is measured

HOLD_BOUND_S = 180.0  # longest wait for the server to hold all N waits
IDLE_BOUND_S = 20.0  # longest wait for the worker's CPU to go quiet once they are held
START_BOUND_S = 30.0  # longest wait for redis-server, gunicorn or nginx to answer
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0  # one order creation, one webhook, one scrape
ANSWER_SLACK_S = 30.0  # beyond the wait's own timeout, before we give up on an answer
RSS_SETTLE_S = 2.5  # one MALLOC_TRIM_INTERVAL (2 s by default) and a margin
HELD_POLL_S = 0.2  # between two looks at the server's count of held requests
CONNECTS_IN_FLIGHT = 200  # stays below the listen backlog (gunicorn 2048, nginx 511)
FD_HEADROOM = 200

# The targets. The spread's p99 is defined for 1,000 distinct orders (20 webhooks in flight)
# and the fan-out's time for 10,000 waits on one order: rows measured at another size say so.
# The ratios to nchan, the spread's p99 and the webhook rate are set to lead nchan on this
# 2-core machine; the absolute RSS and fan-out targets are the service's floor.
TARGET_RSS_PER_WAIT_KIB = 16.0
TARGET_SPREAD_P99_MS, TARGET_SPREAD_N = 15.0, 1000
TARGET_FANOUT_S, TARGET_FANOUT_N = 1.0, 10_000
TARGET_SUSTAINED_PER_S = 3500.0
TARGET_REDIS_PER_WORKER = 4
TARGET_READS_PER_PUSHED_WAIT = 1.0
TARGET_READS_PER_CACHE_HIT = 0.0
TARGET_DISPATCH_P99_S = 0.005
TARGET_RSS_RATIO = 0.20
TARGET_FANOUT_RATIO = 1.0

RECEIPTS = itertools.count()  # one receipt number per webhook of the run


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def worker_pids(master: int, n: int) -> tuple[int, ...]:
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        kids = children_of(master)
        if len(kids) == n:
            return tuple(sorted(kids))
        time.sleep(0.05)
    raise RuntimeError(f"master {master} has not {n} workers: {children_of(master)}")


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
# nginx stops at once on SIGTERM.
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
    workers: tuple[int, ...]
    log: Path

    @property
    def worker(self) -> int:
        """The worker, where there is one."""
        return self.workers[0]

    def changes(self) -> list[str]:
        """What happened to the gunicorn processes since start, if anything."""
        if self.master.poll() is not None:
            return [f"gunicorn master exited with code {self.master.returncode}"]
        workers = tuple(sorted(children_of(self.master.pid)))
        return [] if workers == self.workers else [f"workers {self.workers} gone; now {workers}"]


@contextmanager
def gunicorn(env: dict, workers: int = 1) -> Iterator[Server]:
    """gunicorn with the repo's gunicorn.conf.py and gevent workers (one unless told) on a
    free port."""
    port = free_port()
    args = [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"]
    args += ["-b", f"{HOST}:{port}", "-w", str(workers), "wsgi:app"]
    with tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log") as log:
        popen = dict(cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        with process_group(args, **popen) as proc:
            try:
                wait_for(lambda: answers_ok(port, "/healthz"), f"gunicorn on {port}", proc)
                yield Server(port, proc, worker_pids(proc.pid, workers), Path(log.name))
            except BaseException:
                print_log_tail(Path(log.name))
                raise


def answers_ok(port: int, path: str) -> bool:
    try:
        return requests.get(f"http://{HOST}:{port}{path}", timeout=1).ok
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


def print_log_tail(log: Path, lines: int = 40) -> None:
    """The end of the gunicorn log (on stderr), without the routine INFO lines per request."""
    routine = (" INFO app.payments.", " INFO app.orders.")
    kept = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if not any(mark in line for mark in routine)
    ]
    progress(f"--- gunicorn log, last {lines} lines (per-request INFO lines left out) ---")
    for line in kept[-lines:]:
        progress(f"  {line}")


# nchan: Debian's nginx with libnginx-mod-nchan, a private instance with its own prefix.
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
NCHAN_MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
    "/usr/share/nginx/modules/ngx_nchan_module.so",
)
NGINX_CONF = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
{user}
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen {host}:{port};
        location ~ ^/sub/(\\w+)$ {{ nchan_subscriber longpoll; nchan_channel_id $1; }}
        location ~ ^/pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; }}
        location = /nchan_status {{ nchan_stub_status; }}
    }}
}}
"""


def nchan_install() -> tuple[str, str] | None:
    """(nginx binary, nchan module) when both are installed, else None."""
    nginx = shutil.which("nginx") or next((p for p in NGINX_CANDIDATES if Path(p).exists()), None)
    module = next((p for p in NCHAN_MODULE_CANDIDATES if Path(p).exists()), None)
    return (nginx, module) if nginx and module else None


class Nginx(NamedTuple):
    port: int
    master: subprocess.Popen
    worker: int
    error_log: Path


@contextmanager
def nchan_nginx(connections: int, nofile: int) -> Iterator[Nginx]:
    """nginx + nchan with one worker process on a free loopback port, everything in a prefix
    directory of its own (config, pid, logs, temp paths); stopped and removed on exit."""
    install = nchan_install()
    if install is None:
        raise RuntimeError("--vs-nchan needs nginx and libnginx-mod-nchan (apt-get install)")
    nginx, module = install
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-nchan-") as prefix:
        (Path(prefix) / "logs").mkdir()
        (Path(prefix) / "tmp").mkdir()
        # Started as root, nginx would switch its worker to `nobody`; keep the user we are.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = NGINX_CONF.format(
            module=module,
            nofile=nofile,
            prefix=prefix,
            user=user,
            connections=connections,
            host=HOST,
            port=port,
        )
        (Path(prefix) / "nginx.conf").write_text(conf)
        error_log = Path(prefix) / "logs" / "error.log"
        args = [nginx, "-p", f"{prefix}/", "-c", f"{prefix}/nginx.conf", "-e", str(error_log)]
        with process_group(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) as proc:
            try:
                wait_for(lambda: answers_ok(port, "/nchan_status"), f"nginx on {port}", proc)
                (worker,) = worker_pids(proc.pid, 1)
                yield Nginx(port, proc, worker, error_log)
            except BaseException:
                if error_log.exists():
                    progress(f"--- nginx error log ---\n{error_log.read_text(errors='replace')}")
                raise


def nginx_problems(error_log: Path) -> list[str]:
    """The error log's warnings and worse (nginx drops subscribers it has no room for)."""
    levels = ("[warn]", "[error]", "[crit]", "[alert]", "[emerg]")
    text = error_log.read_text(errors="replace") if error_log.exists() else ""
    return [line for line in text.splitlines() if any(level in line for level in levels)]


# -- HTTP/1.1 over raw asyncio sockets -----------------------------------------------------


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Exchange(NamedTuple):
    """One request's fate: when it was written, when its answer arrived, and the answer.

    For a held request `done_at` is when the answer's last byte reached our socket, by the
    kernel's stamp (kernel_clock.py), and `read_at` when the generator got round to reading
    it; for the others both are when it was read.
    """

    sent_at: float
    done_at: float
    response: Response | None
    error: str | None
    read_at: float | None = None


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


def parse_head(head: str) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names) of a response head, without its blank line."""
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raise ValueError("chunked responses are not supported by this client")
    return status, headers


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status, headers = parse_head(head[:-4])
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()  # the server closes the connection after the body
    return Response(status, headers, body)


def complete_response(buffer: bytearray, closed: bool = False) -> Response | None:
    """The response in `buffer` once all of it is there (a body without Content-Length ends
    when the server closes: `closed`), else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    status, headers = parse_head(bytes(buffer[:end]).decode("latin-1"))
    start = end + 4
    if "content-length" not in headers:
        return Response(status, headers, bytes(buffer[start:])) if closed else None
    stop = start + int(headers["content-length"])
    return Response(status, headers, bytes(buffer[start:stop])) if len(buffer) >= stop else None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def fetch(port: int, path: str) -> Response:
    """One GET on a connection of its own."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_S)
    try:
        writer.write(http_request("GET", path, port, {"Connection": "close"}))
        return await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
    finally:
        writer.close()


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


CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class HeldRequest:
    """One long poll on a raw non-blocking socket of its own; answered when the answer's last
    byte is read.

    The generator's cost per answer must stay well below the server's, or a 10,000-answer
    fan-out measures the generator. So no transport, stream reader or task per request: the
    loop calls `readable` straight from its selector, which reads, checks only that the
    answer is complete by its Content-Length, and stops watching the socket. The answer is
    parsed after the run, and sockets are closed after it, not while answers still arrive.
    """

    __slots__ = ("payload", "on_done", "sock", "chunks", "sent_at", "done_at", "closed")
    __slots__ += ("error", "read_at", "source")

    def __init__(
        self, payload: bytes, on_done: Callable[[HeldRequest], None], source: str | None = None
    ):
        self.payload = payload
        self.source = source  # the loopback address to connect from (127.0.0.x)
        self.on_done = on_done
        self.sock: socket.socket | None = None
        self.chunks: list[bytes] = []
        self.sent_at = time.monotonic()
        self.done_at: float | None = None  # the last byte's arrival, by the kernel's stamp
        self.read_at: float | None = None  # when this generator read it
        self.closed = False  # the server closed before the answer was complete by its length
        self.error: str | None = None

    async def start(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        """Connect, send the request, and watch the socket for the answer."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        stamp_arrivals(self.sock)
        if self.source is not None:
            self.sock.bind((self.source, 0))
        await asyncio.wait_for(loop.sock_connect(self.sock, (HOST, port)), CONNECT_TIMEOUT_S)
        self.sent_at = time.monotonic()
        await asyncio.wait_for(loop.sock_sendall(self.sock, self.payload), CONNECT_TIMEOUT_S)
        loop.add_reader(self.sock.fileno(), self.readable, loop)

    def readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            data, arrived_at = recv_stamped(self.sock, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            loop.remove_reader(self.sock.fileno())
            self.finish(describe(exc))
            return
        if not data:  # the server closed: what came is all there is
            loop.remove_reader(self.sock.fileno())
            self.closed = True
            self.finish(None)
            return
        self.chunks.append(data)
        data = data if len(self.chunks) == 1 else b"".join(self.chunks)
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = CONTENT_LENGTH.search(data, 0, end + 2)
            if length is not None and len(data) >= end + 4 + int(length[1]):
                self.read_at = time.monotonic()
                self.done_at = self.read_at if arrived_at is None else arrived_at
                loop.remove_reader(self.sock.fileno())
                self.on_done(self)

    def finish(self, error: str | None) -> None:
        """Done without an answer complete by its length: closed, refused or cut off."""
        self.done_at = self.read_at = time.monotonic()
        self.error = error
        self.on_done(self)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.sock is not None:
            if self.done_at is None:
                loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def exchange(self) -> Exchange | None:
        if self.done_at is None:
            return None
        response, error = None, self.error
        if error is None:
            try:
                response = complete_response(bytearray(b"".join(self.chunks)), self.closed)
            except ValueError as exc:
                error = describe(exc)
            if response is None and error is None:
                error = "connection closed before a complete answer"
        return Exchange(self.sent_at, self.done_at, response, error, self.read_at)


class HeldSet:
    """N held requests, opened at most CONNECTS_IN_FLIGHT connects at a time."""

    def __init__(self, payloads: list[bytes], source: str | None = None):
        self.requests = [HeldRequest(payload, self._done, source) for payload in payloads]
        self.finished = 0
        self._all_finished = asyncio.Event()
        self._connects: list[asyncio.Task] = []

    def _done(self, _request: HeldRequest) -> None:
        self.finished += 1
        if self.finished >= len(self.requests):
            self._all_finished.set()

    def open(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def connect(request: HeldRequest) -> None:
            async with gate:
                try:
                    await request.start(loop, port)
                except NETWORK_ERRORS as exc:
                    if request.done_at is None:
                        request.finish(describe(exc))

        self._connects = [asyncio.create_task(connect(request)) for request in self.requests]

    async def opened(self) -> None:
        """Until every connect was tried: each request sent, or failed."""
        await asyncio.gather(*self._connects, return_exceptions=True)

    async def wait(self, bound_s: float) -> None:
        """Until every request is answered, or for `bound_s` at most."""
        try:
            await asyncio.wait_for(self._all_finished.wait(), bound_s)
        except TimeoutError:
            pass

    def exchanges(self) -> list[Exchange | None]:
        """Each request's exchange (None: not answered yet), parsed now."""
        return [request.exchange() for request in self.requests]

    async def close(self) -> None:
        for task in self._connects:
            task.cancel()
        await asyncio.gather(*self._connects, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for request in self.requests:
            request.close(loop)


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


def webhook_request(port: int, order: dict, secret: str) -> bytes:
    body = webhook_body(order, next(RECEIPTS))
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


def subscribe_request(port: int, channel: str) -> bytes:
    # Connection: close, as the app's waits: each held subscriber costs one connection.
    return http_request("GET", f"/sub/{channel}", port, {"Connection": "close"})


def publish_request(port: int, channel: str, message: bytes) -> bytes:
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    return http_request("POST", f"/pub/{channel}", port, headers, message)


def nchan_message(channel: str, size: int) -> bytes:
    """A message of about `size` bytes (the app's answer size), unique to its channel."""
    base = {"channel": channel, "paymentStatus": "completed", "changed": True, "pad": ""}
    pad = max(0, size - len(json.dumps(base)))
    return json.dumps({**base, "pad": "x" * pad}).encode()


# -- what the servers show -----------------------------------------------------------------


class CpuMark(NamedTuple):
    generator: float
    worker: float

    @classmethod
    def now(cls, worker: int) -> CpuMark:
        return cls(time.process_time(), cpu_seconds(worker))

    def until(self, later: CpuMark) -> CpuMark:
        return CpuMark(later.generator - self.generator, later.worker - self.worker)


async def wait_worker_idle(pid: int, window_s: float = 0.5, busy_s: float = 0.02) -> None:
    """Wait until the worker burns less than `busy_s` CPU in a window: every wait is parked."""
    deadline = time.monotonic() + IDLE_BOUND_S
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(window_s)
        if cpu_seconds(pid) - before < busy_s:
            return


class RedisClients(NamedTuple):
    total: int  # every connection on the private Redis but ours
    of_worker: int  # those whose local port is a socket of the worker process
    by_name: Counter


async def redis_clients(store: aioredis.Redis, worker: int) -> RedisClients:
    clients = [c for c in await store.client_list() if c.get("name") != BENCH_CLIENT_NAME]
    worker_ports = socket_ports(worker)
    of_worker = sum(int(c["addr"].rsplit(":", 1)[1]) in worker_ports for c in clients)
    return RedisClients(len(clients), of_worker, Counter(c.get("name") or "?" for c in clients))


SAMPLE_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prometheus_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE_LINE.match(line)
        if match:
            yield match[1], dict(LABEL_PAIR.findall(match[2] or "")), float(match[3])


def metric_value(text: str, name: str) -> float:
    return sum(value for metric, _, value in prometheus_samples(text) if metric == name)


def histogram_buckets(text: str, name: str, source: str) -> dict[float, float]:
    """Cumulative counts by upper bound (`le`, +Inf included) of one labelled histogram."""
    return {
        float(labels["le"]): value
        for metric, labels, value in prometheus_samples(text)
        if metric == f"{name}_bucket" and labels.get("source") == source
    }


class BucketP99(NamedTuple):
    bound_s: float  # the smallest bucket bound holding 99% of the observations (inf: none)
    count: int  # observations between the two scrapes


def bucket_p99(before: dict[float, float], after: dict[float, float]) -> BucketP99:
    """p99 of the observations made between two scrapes, as a bucket bound: a histogram only
    says how many fell under each bound, so this is an upper bound of the true p99."""
    bounds = sorted(after)
    counts = {le: after[le] - before.get(le, 0.0) for le in bounds}
    total = counts.get(math.inf, 0.0)
    if total <= 0:
        return BucketP99(math.nan, 0)
    bound = next(le for le in bounds if counts[le] >= 0.99 * total)
    return BucketP99(bound, int(total))


async def app_held(port: int, store: aioredis.Redis, one_channel: bool) -> int:
    """Waits the worker holds waiting for news: its hub's `parked` count (parked requests and
    blocked greenlets, from /readyz; not the `waits_held` gauge, which also counts waits
    still queued for their turn to read the order), and no more than there are channels
    subscribed (one per order: a webhook sent before its channel is subscribed could go
    unheard)."""
    waiting = int(parse_json((await fetch(port, "/readyz")).body)["hub"]["parked"])
    channels = len(await store.pubsub_channels(CHANNEL_PATTERN))
    if one_channel:
        return waiting if channels else 0
    return min(waiting, channels)


async def nchan_held(port: int) -> int:
    status = (await fetch(port, "/nchan_status")).body.decode()
    match = re.search(r"^subscribers:\s*(\d+)", status, re.MULTILINE)
    return int(match[1]) if match else 0


class Reading(NamedTuple):
    reads: int
    settled: bool  # False: some server backend may not have flushed its counts yet


# Which server backends may still hold unflushed counts: a backend is done when it is idle
# and either went idle after the mark (it ran a statement then, see OrdersReads) or has been
# idle longer than PostgreSQL's idle flush timer (10 s in PostgreSQL 15).
BACKENDS_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE NOT (coalesce(state, '') = 'idle'
                                   AND (state_change > %s
                                        OR state_change < clock_timestamp() - interval '10.5 s')))
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
"""
ORDERS_READS_SQL = """
SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables
WHERE relname = 'orders'
"""
STATS_QUIET_S = 1.1  # PostgreSQL flushes a backend's counts at most once a second
STATS_SETTLE_BOUND_S = 15.0
NUDGE_ROUNDS = 3


class OrdersReads:
    """Reads of the `orders` table from PostgreSQL's statistics: seq_scan + idx_scan of
    pg_stat_user_tables: each statement that finds rows of the table, by an index or a scan,
    counts one (an `UPDATE ... WHERE id = ...` too, so a webhook counts its select and its
    update). Statements, not round trips: what the app asks of the database per wait.

    PostgreSQL 15 keeps each backend's counts locally and flushes them to shared memory as the
    backend goes idle, but at most once a second: a backend that flushed less than a second
    before arms a timer and flushes 10 s later. pg_stat_force_next_flush() acts only on the
    calling backend, never on the server's, and pg_stat_clear_snapshot() only drops this
    session's cached view. So a reading waits for every server backend to have flushed since
    the work ended: after a quiet STATS_QUIET_S, a backend that runs one more statement and
    goes idle either flushes then or flushed less than a second before, which was after the
    work. The statement is /readyz's `SELECT 1`, sent once per server connection (SQLAlchemy's
    queue pool hands its connections out in turn), and pg_stat_activity shows which backends
    went idle since. The rest are waited out on their own 10 s timer (bounded).
    """

    def __init__(self, database_url: str):
        self.conn = psycopg2.connect(database_url)
        self.conn.autocommit = True  # each statement its own transaction: fresh statistics

    def close(self) -> None:
        self.conn.close()

    def _one(self, sql: str, params: tuple = ()) -> tuple:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    async def reading(self, nudge: Callable[[int], Awaitable[None]]) -> Reading:
        await asyncio.sleep(STATS_QUIET_S)
        (mark,) = self._one("SELECT clock_timestamp()")
        deadline = time.monotonic() + STATS_SETTLE_BOUND_S
        for attempt in itertools.count():
            backends, pending = self._one(BACKENDS_SQL, (mark,))
            if not pending or time.monotonic() > deadline:
                self._one("SELECT pg_stat_clear_snapshot()")
                (reads,) = self._one(ORDERS_READS_SQL)
                return Reading(int(reads), not pending)
            if attempt < NUDGE_ROUNDS:
                await nudge(backends)
            else:
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")


# -- the shapes ----------------------------------------------------------------------------


@dataclass
class Held:
    """One held shape: N requests held, then answered after their triggers."""

    n: int
    held: int = 0
    rss_baseline: int = 0
    rss_held: int = 0
    cpu_hold: CpuMark | None = None
    cpu_deliver: CpuMark | None = None
    triggers: list[Exchange] = field(default_factory=list)  # webhooks or publishes
    answers: list[Exchange | None] = field(default_factory=list)
    observed: dict = field(default_factory=dict)  # what the server showed on the way

    @property
    def rss_per_held_kib(self) -> float:
        return (self.rss_held - self.rss_baseline) / self.held if self.held else math.nan


async def wait_until_held(count: Callable[[], Awaitable[int]], held: HeldSet, n: int) -> int:
    """Poll the server's count until N are held (or the rest have finished)."""
    deadline = time.monotonic() + HOLD_BOUND_S
    while True:
        holding = await count()
        if holding + held.finished >= n or time.monotonic() > deadline:
            return holding
        await asyncio.sleep(HELD_POLL_S)


Hook = Callable[[Held], Awaitable[None]]


async def held_shape(
    port: int,
    worker: int,
    waits: list[bytes],
    triggers: list[bytes],
    *,
    concurrency: int,
    answer_bound_s: float,
    count_held: Callable[[], Awaitable[int]],
    while_held: Hook | None = None,
    after: Hook | None = None,
    profile: Callable[[], AbstractContextManager] = nullcontext,
) -> Held:
    """Hold every wait, measure, fire the triggers `concurrency` at a time, collect answers.

    `while_held` runs once all are held and measured (RSS, CPU), before the first trigger;
    `after` once the answers are in. Neither is in the CPU figures. `profile` wraps the
    triggers and their answers.
    """
    shape = Held(len(waits))
    held = HeldSet(waits)
    try:
        shape.rss_baseline = rss_kib(worker)
        start = CpuMark.now(worker)
        held.open(port)
        shape.held = await wait_until_held(count_held, held, shape.n)
        await wait_worker_idle(worker)
        shape.cpu_hold = start.until(CpuMark.now(worker))
        # The worker gives memory its finished requests freed back to the system every
        # MALLOC_TRIM_INTERVAL (gunicorn.conf.py): read the RSS it holds its waits with,
        # not whatever phase of that cycle the last request ended in.
        await asyncio.sleep(RSS_SETTLE_S)
        shape.rss_held = rss_kib(worker)
        if while_held is not None:
            await while_held(shape)
        with profile():
            start = CpuMark.now(worker)
            shape.triggers = await request_pool(port, triggers, concurrency)
            await held.wait(answer_bound_s)
            shape.cpu_deliver = start.until(CpuMark.now(worker))
        shape.answers = held.exchanges()
        if after is not None:
            await after(shape)
        return shape
    finally:
        await held.close()


class App(NamedTuple):
    """The app under test and what the shapes need to drive and observe it."""

    server: Server
    redis_url: str
    secret: str
    pg: OrdersReads
    args: argparse.Namespace
    profiler: Profiler

    def profile(self, phase: str) -> Callable[[], AbstractContextManager]:
        return lambda: self.profiler.phase(self.server.worker, phase)

    @property
    def answer_bound_s(self) -> float:
        return self.args.timeout_ms / 1000 + ANSWER_SLACK_S

    def store(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.redis_url, client_name=BENCH_CLIENT_NAME, decode_responses=True
        )

    async def reads(self) -> Reading:
        async def nudge(connections: int) -> None:
            for _ in range(connections):
                await fetch(self.server.port, "/readyz")

        return await self.pg.reading(nudge)

    async def scrape(self) -> str:
        return (await fetch(self.server.port, "/metrics")).body.decode()


async def app_spread(app: App, orders: list[dict], *, observe: bool) -> Held:
    """One wait per order, one webhook per order. With `observe`: the worker's Redis clients,
    reads of `orders` before, while held and after, and /metrics around the deliveries."""
    port, worker, args = app.server.port, app.server.worker, app.args
    store = app.store()
    before: list[Reading] = []

    async def while_held(shape: Held) -> None:
        shape.observed["redis"] = await redis_clients(store, worker)
        shape.observed["open files"] = open_files_limit(worker)
        if observe:
            shape.observed["reads"] = [*before, await app.reads()]
            shape.observed["metrics"] = [await app.scrape()]

    async def after(shape: Held) -> None:
        if observe:
            shape.observed["metrics"].append(await app.scrape())
            shape.observed["reads"].append(await app.reads())

    try:
        if observe:
            before.append(await app.reads())
        return await held_shape(
            port,
            worker,
            [wait_request(port, order, args.timeout_ms) for order in orders],
            [webhook_request(port, order, app.secret) for order in orders],
            concurrency=args.concurrency,
            answer_bound_s=app.answer_bound_s,
            count_held=lambda: app_held(port, store, one_channel=False),
            while_held=while_held,
            after=after,
            profile=app.profile("spread") if observe else nullcontext,
        )
    finally:
        await store.aclose()


async def app_fanout(app: App, order: dict, n: int) -> Held:
    """N waits on one order, then its one webhook."""
    port, worker, args = app.server.port, app.server.worker, app.args
    store = app.store()
    try:
        return await held_shape(
            port,
            worker,
            [wait_request(port, order, args.timeout_ms)] * n,
            [webhook_request(port, order, app.secret)],
            concurrency=1,
            answer_bound_s=app.answer_bound_s,
            count_held=lambda: app_held(port, store, one_channel=True),
            profile=app.profile("fanout"),
        )
    finally:
        await store.aclose()


@dataclass
class CacheProbe:
    """Orders paid while nobody waits, then one wait each with since=1."""

    webhooks: list[Exchange]
    answers: list[Exchange | None]
    reads: list[Reading]  # before the webhooks, after them, after the waits


async def cache_probe(app: App, orders: list[dict]) -> CacheProbe:
    port, args = app.server.port, app.args
    before = await app.reads()
    webhooks = await request_pool(
        port, [webhook_request(port, order, app.secret) for order in orders], args.concurrency
    )
    paid = await app.reads()
    held = HeldSet([wait_request(port, order, args.timeout_ms) for order in orders])
    try:
        held.open(port)
        await held.wait(REQUEST_TIMEOUT_S)  # a cached answer comes at once
        answers = held.exchanges()
    finally:
        await held.close()
    return CacheProbe(webhooks, answers, [before, paid, await app.reads()])


class Sustained(NamedTuple):
    webhooks: list[Exchange]
    cpu: CpuMark


async def sustained(app: App, orders: list[dict]) -> Sustained:
    port, worker = app.server.port, app.server.worker
    payloads = [webhook_request(port, order, app.secret) for order in orders]
    with app.profile("sustained")():
        start = CpuMark.now(worker)
        webhooks = await request_pool(port, payloads, app.args.concurrency)
        return Sustained(webhooks, start.until(CpuMark.now(worker)))


async def nchan_spread(nginx: Nginx, channels: list[str], messages: list[bytes], args) -> Held:
    port = nginx.port
    return await held_shape(
        port,
        nginx.worker,
        [subscribe_request(port, channel) for channel in channels],
        [publish_request(port, ch, msg) for ch, msg in zip(channels, messages, strict=True)],
        concurrency=args.concurrency,
        answer_bound_s=REQUEST_TIMEOUT_S + ANSWER_SLACK_S,
        count_held=lambda: nchan_held(port),
    )


async def nchan_fanout(nginx: Nginx, channel: str, message: bytes, n: int) -> Held:
    port = nginx.port
    return await held_shape(
        port,
        nginx.worker,
        [subscribe_request(port, channel)] * n,
        [publish_request(port, channel, message)],
        concurrency=1,
        answer_bound_s=REQUEST_TIMEOUT_S + ANSWER_SLACK_S,
        count_held=lambda: nchan_held(port),
    )


# -- judging -------------------------------------------------------------------------------


@dataclass
class Verdict:
    n: int = 0
    answered: int = 0
    correct: int = 0
    wrong: int = 0
    errors: int = 0
    unanswered: int = 0
    triggers_failed: int = 0  # webhooks or publishes the server did not accept
    latencies_ms: list[float] = field(default_factory=list)
    last_answer_s: float = math.nan  # from the first trigger's send to the last arrival
    last_read_s: float = math.nan  # ... to when the generator read the last answer
    sources: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)  # the first few problems, as seen

    def note(self, problem: str) -> None:
        if len(self.samples) < 6:
            self.samples.append(problem)

    @property
    def all_correct(self) -> bool:
        return self.correct == self.n and not self.triggers_failed

    def answered_text(self) -> str:
        return f"{self.correct} of {self.n}"


Check = Callable[[int, Response], bool]


def judge(answers: list[Exchange | None], triggers: list[Exchange], correct: Check) -> Verdict:
    """Each answer against its trigger (one trigger for all: fan-out)."""
    verdict = Verdict(n=len(answers))
    for trigger in triggers:
        if trigger.response is None or not 200 <= trigger.response.status < 300:
            verdict.triggers_failed += 1
            verdict.note(f"trigger: {failure(trigger)}")
    last = last_read = -math.inf
    for i, answer in enumerate(answers):
        trigger = triggers[i] if len(triggers) == len(answers) else triggers[0]
        if answer is None:
            verdict.unanswered += 1
            continue
        if answer.response is None:
            verdict.errors += 1
            verdict.note(f"answer: {answer.error}")
            continue
        verdict.answered += 1
        last = max(last, answer.done_at)
        last_read = max(last_read, answer.read_at or answer.done_at)
        verdict.sources[parse_json(answer.response.body).get("source", "-")] += 1
        if correct(i, answer.response):
            verdict.correct += 1
            verdict.latencies_ms.append((answer.done_at - trigger.sent_at) * 1000)
        else:
            verdict.wrong += 1
            verdict.note(f"answer: {failure(answer)}")
    if triggers and verdict.answered:
        verdict.last_answer_s = last - min(t.sent_at for t in triggers)
        verdict.last_read_s = last_read - min(t.sent_at for t in triggers)
    verdict.latencies_ms.sort()
    return verdict


def paid_answer(_i: int, response: Response) -> bool:
    body = parse_json(response.body)
    return (
        response.status == 200
        and body.get("changed") is True
        and body.get("paymentStatus") == "completed"
    )


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


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def rate_per_s(exchanges: list[Exchange]) -> float:
    span = max(e.done_at for e in exchanges) - min(e.sent_at for e in exchanges)
    return len(exchanges) / span if span > 0 else math.nan


def accepted(exchanges: list[Exchange], status: int = 200) -> int:
    return sum(e.response is not None and e.response.status == status for e in exchanges)


# -- the table -----------------------------------------------------------------------------


class Row(NamedTuple):
    figure: str
    measured: str
    target: str = "-"
    ok: bool | None = None  # None: a figure without a target


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
        ("date", time.strftime("%Y-%m-%d %H:%M %Z")),
    ]


def at_size(n: int, target_n: int) -> str:
    """The size a row was measured at, and the one its target is set for when they differ."""
    return f"N={n}" if n == target_n else f"N={n}; target set for N={target_n:,}"


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def kib(value: float) -> str:
    return f"{value:.1f} KiB"


def cpu_text(hold: CpuMark | None, deliver: CpuMark | None) -> str:
    parts = [f"{m.generator:.2f} / {m.worker:.2f}" for m in (hold, deliver) if m is not None]
    return "; ".join(parts)


def bound_text(p99: BucketP99) -> str:
    if not p99.count:
        return "no observations"
    if math.isinf(p99.bound_s):
        return f"> last bucket ({p99.count} answers)"
    return f"<= {p99.bound_s * 1000:g} ms (bucket bound, {p99.count} answers)"


def ratio_row(figure: str, app_value: float, nchan_value: float, target: float | None) -> Row:
    """app / nchan, judged against `target` unless it is None (shown only)."""
    bound = "-" if target is None else f"<= {target:g}x"
    if not nchan_value > 0 or math.isnan(app_value):
        # Too few held requests to move the RSS by a page, say: no ratio to judge.
        return Row(figure, f"n/a ({app_value:.3g} / {nchan_value:.3g})", bound)
    ratio = app_value / nchan_value
    return Row(figure, f"{ratio:.2f}x", bound, None if target is None else ratio <= target)


@dataclass
class Results:
    cold: Verdict | None = None
    probe: CacheProbe | None = None
    probe_verdict: Verdict | None = None
    spread: Held | None = None
    spread_verdict: Verdict | None = None
    fanout: Held | None = None
    fanout_verdict: Verdict | None = None
    memory: Held | None = None
    memory_verdict: Verdict | None = None
    sustained: Sustained | None = None
    scaling: list | None = None  # bench/scaling.py's measures
    host: tuple | None = None  # bench/host.py's HostRun
    nchan_spread: Held | None = None
    nchan_spread_verdict: Verdict | None = None
    nchan_fanout: Held | None = None
    nchan_fanout_verdict: Verdict | None = None
    nchan_memory: Held | None = None
    nchan_memory_verdict: Verdict | None = None
    problems: list[str] = field(default_factory=list)  # gunicorn's
    nginx_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def verdicts(self) -> list[Verdict]:
        every = (
            self.cold,
            self.probe_verdict,
            self.spread_verdict,
            self.fanout_verdict,
            self.memory_verdict,
            self.nchan_spread_verdict,
            self.nchan_fanout_verdict,
            self.nchan_memory_verdict,
        )
        return [v for v in every if v is not None]

    def passed(self) -> bool:
        webhooks_ok = self.sustained is None or accepted(self.sustained.webhooks) == len(
            self.sustained.webhooks
        )
        if self.scaling is not None:
            webhooks_ok = webhooks_ok and all(m.accepted == m.sent for m in self.scaling)
        webhooks_ok = webhooks_ok and (self.host is None or self.host.correct == self.host.waits)
        return webhooks_ok and all(v.all_correct for v in self.verdicts())


def webhook_and_answer_text(shape: Held) -> str:
    """Where a spread answer's time goes: the webhook's own response, and how long after it
    the answer came (negative: before)."""
    response_ms = sorted((t.done_at - t.sent_at) * 1000 for t in shape.triggers)
    after_ms = sorted(
        (answer.done_at - trigger.done_at) * 1000
        for answer, trigger in zip(shape.answers, shape.triggers, strict=True)
        if answer is not None
    )
    p50, p99 = percentile(response_ms, 50), percentile(response_ms, 99)
    return f"{ms(p50)} / {ms(p99)}; {ms(percentile(after_ms, 50))}"


def spread_rows(args, results: Results) -> list[Row]:
    shape, verdict = results.spread, results.spread_verdict
    lat, n = verdict.latencies_ms, shape.n
    p99 = percentile(lat, 99)
    rss = shape.rss_per_held_kib
    redis = shape.observed["redis"]
    rows = [
        Row(
            f"held waits answered correctly, spread (N={n})",
            verdict.answered_text(),
            "all",
            verdict.all_correct,
        ),
        Row(
            "worker RSS per held wait, spread",
            kib(rss),
            f"<= {TARGET_RSS_PER_WAIT_KIB:g} KiB",
            rss <= TARGET_RSS_PER_WAIT_KIB,
        ),
        Row("spread webhook->answer p50", ms(percentile(lat, 50))),
        Row(
            f"spread webhook->answer p99 ({at_size(n, TARGET_SPREAD_N)})",
            ms(p99),
            f"<= {TARGET_SPREAD_P99_MS:g} ms",
            p99 <= TARGET_SPREAD_P99_MS and verdict.all_correct,
        ),
        Row(
            "spread webhook response p50 / p99; answer after the response p50",
            webhook_and_answer_text(shape),
        ),
        Row(
            f"spread webhooks per second ({args.concurrency} in flight)",
            f"{rate_per_s(shape.triggers):.0f}",
        ),
        Row(
            "Redis connections per worker",
            str(redis.of_worker),
            f"<= {TARGET_REDIS_PER_WORKER}",
            redis.of_worker <= TARGET_REDIS_PER_WORKER,
        ),
    ]
    rows += reads_rows(results)
    metrics = shape.observed["metrics"]
    dispatch = bucket_p99(
        *(histogram_buckets(m, "orderwait_dispatch_seconds", "redis") for m in metrics)
    )
    delivery = bucket_p99(
        *(histogram_buckets(m, "orderwait_delivery_seconds", "redis") for m in metrics)
    )
    rows += [
        Row(
            "internal delivery p99, spread: hub message -> answer written",
            bound_text(dispatch),
            f"<= {TARGET_DISPATCH_P99_S * 1000:g} ms",
            dispatch.count > 0 and dispatch.bound_s <= TARGET_DISPATCH_P99_S,
        ),
        Row("settlement p99, spread: order updatedAt -> answer written", bound_text(delivery)),
    ]
    rows.append(
        Row(
            "CPU s generator / worker, spread: hold; deliver",
            cpu_text(shape.cpu_hold, shape.cpu_deliver),
        )
    )
    return rows


def reads_rows(results: Results) -> list[Row]:
    """Reads of `orders` per wait, from the counts around each phase (see OrdersReads).

    Waits answered by pub/sub: the reads while the spread's waits were opened and held, per
    wait, plus those while they were answered, less the webhooks' own reads (per webhook, as
    measured on the probe's webhooks, which nobody waited on), per wait.
    Cache hits: the reads while the probe's waits were answered, per wait.
    """
    probe, spread = results.probe, results.spread
    k, n = len(probe.answers), spread.n
    per_webhook = (probe.reads[1].reads - probe.reads[0].reads) / k
    per_hit = (probe.reads[2].reads - probe.reads[1].reads) / k
    r0, r1, r2 = spread.observed["reads"]
    hold = (r1.reads - r0.reads) / n
    wake = (r2.reads - r1.reads - per_webhook * n) / n
    pushed = hold + wake
    settled = all(r.settled for r in (*probe.reads, r0, r1, r2))
    caveat = "" if settled else " (statistics not settled)"
    from_cache = results.probe_verdict.sources.get("cache", 0)
    results.notes.append(
        f"reads of orders per wait answered by pub/sub: {hold:.2f} opening and holding + "
        f"{wake:.2f} answering (the webhooks' own {per_webhook:.2f} per webhook taken out); "
        f"cache probe: {k} orders, {from_cache} answered from the cache"
    )
    return [
        Row(
            "DB reads of orders per wait answered by pub/sub" + caveat,
            f"{pushed:.2f}",
            f"<= {TARGET_READS_PER_PUSHED_WAIT:g}",
            round(pushed, 2) <= TARGET_READS_PER_PUSHED_WAIT,
        ),
        Row(
            f"DB reads of orders per wait on a cache hit ({from_cache} of {k} from cache)" + caveat,
            f"{per_hit:.2f}",
            f"{TARGET_READS_PER_CACHE_HIT:g}",
            round(per_hit, 2) <= TARGET_READS_PER_CACHE_HIT and from_cache == k,
        ),
    ]


def cold_rows(results: Results) -> list[Row]:
    cold = results.cold
    return [
        Row(
            f"cold worker, first {cold.n} waits: answered correctly; webhook->answer p99",
            f"{cold.answered_text()}; {ms(percentile(cold.latencies_ms, 99))}",
            "all",
            cold.all_correct,
        )
    ]


def fanout_rows(results: Results) -> list[Row]:
    shape, verdict = results.fanout, results.fanout_verdict
    rss, last = shape.rss_per_held_kib, verdict.last_answer_s
    if results.spread is None:
        rss_row = Row(
            "worker RSS per held wait, fan-out",
            kib(rss),
            f"<= {TARGET_RSS_PER_WAIT_KIB:g} KiB",
            rss <= TARGET_RSS_PER_WAIT_KIB,
        )
    else:
        # The worker keeps the memory the spread's waits freed, and the fan-out's reuse it:
        # their RSS hardly grows. Shown, not judged; the spread's row is the figure.
        rss_row = Row("worker RSS per held wait, fan-out (after the spread: reads low)", kib(rss))
    return [
        Row(
            f"held waits answered correctly, fan-out (N={shape.n})",
            verdict.answered_text(),
            "all",
            verdict.all_correct,
        ),
        rss_row,
        Row(
            f"fan-out webhook -> last answer ({at_size(shape.n, TARGET_FANOUT_N)})",
            f"{last:.3f} s",
            f"<= {TARGET_FANOUT_S:g} s",
            last <= TARGET_FANOUT_S and verdict.all_correct,
        ),
        Row("fan-out webhook -> last answer read by us", f"{verdict.last_read_s:.3f} s"),
        Row(
            "CPU s generator / worker, fan-out: hold; deliver",
            cpu_text(shape.cpu_hold, shape.cpu_deliver),
        ),
    ]


def memory_rows(results: Results) -> list[Row]:
    shape, verdict = results.memory, results.memory_verdict
    rss = shape.rss_per_held_kib
    return [
        Row(
            f"held waits answered correctly, memory (N={shape.n})",
            verdict.answered_text(),
            "all",
            verdict.all_correct,
        ),
        Row(
            f"worker RSS per held wait, memory (N={shape.n})",
            kib(rss),
            f"<= {TARGET_RSS_PER_WAIT_KIB:g} KiB",
            rss <= TARGET_RSS_PER_WAIT_KIB,
        ),
    ]


def sustained_rows(results: Results) -> list[Row]:
    webhooks, cpu = results.sustained
    m, ok = len(webhooks), accepted(webhooks)
    rate = rate_per_s(webhooks)
    return [
        Row(
            f"sustained webhooks per second (M={m}, {ok} of {m} HTTP 200)",
            f"{rate:.0f}",
            f">= {TARGET_SUSTAINED_PER_S:g}",
            rate >= TARGET_SUSTAINED_PER_S and ok == m,
        ),
        Row("CPU s generator / worker, sustained", cpu_text(cpu, None)),
    ]


def nchan_rows(results: Results) -> list[Row]:
    rows = []
    spread, fanout, memory = results.nchan_spread, results.nchan_fanout, results.nchan_memory
    if spread is not None:
        verdict = results.nchan_spread_verdict
        lat = verdict.latencies_ms
        rows += [
            Row(
                f"nchan subscribers answered correctly, spread (N={spread.n})",
                verdict.answered_text(),
                "all",
                verdict.all_correct,
            ),
            Row("nchan RSS per held subscriber, spread", kib(spread.rss_per_held_kib)),
            Row(
                "nchan spread publish->answer p50 / p99",
                f"{percentile(lat, 50):.1f} / {percentile(lat, 99):.1f} ms",
            ),
        ]
    if fanout is not None:
        verdict = results.nchan_fanout_verdict
        rows += [
            Row(
                f"nchan subscribers answered correctly, fan-out (N={fanout.n})",
                verdict.answered_text(),
                "all",
                verdict.all_correct,
            ),
            Row("nchan RSS per held subscriber, fan-out", kib(fanout.rss_per_held_kib)),
            Row("nchan fan-out publish -> last answer", f"{verdict.last_answer_s:.3f} s"),
            Row("nchan fan-out publish -> last answer read by us", f"{verdict.last_read_s:.3f} s"),
        ]
    if memory is not None:
        verdict = results.nchan_memory_verdict
        rows += [
            Row(
                f"nchan subscribers answered correctly, memory (N={memory.n})",
                verdict.answered_text(),
                "all",
                verdict.all_correct,
            ),
            Row(
                f"nchan RSS per held subscriber, memory (N={memory.n})",
                kib(memory.rss_per_held_kib),
            ),
        ]
    if spread is not None and results.spread is not None:
        # With the memory shape, judged on its size, where the growth is not noise.
        judged = memory is None or results.memory is None
        rows.append(
            ratio_row(
                "ratio RSS per held wait, app/nchan, spread",
                results.spread.rss_per_held_kib,
                spread.rss_per_held_kib,
                TARGET_RSS_RATIO if judged else None,
            )
        )
    if memory is not None and results.memory is not None:
        rows.append(
            ratio_row(
                f"ratio RSS per held wait, app/nchan, memory (N={memory.n})",
                results.memory.rss_per_held_kib,
                memory.rss_per_held_kib,
                TARGET_RSS_RATIO,
            )
        )
    if fanout is not None and results.fanout is not None:
        rows.append(
            ratio_row(
                "ratio fan-out last answer, app/nchan",
                results.fanout_verdict.last_answer_s,
                results.nchan_fanout_verdict.last_answer_s,
                TARGET_FANOUT_RATIO,
            )
        )
    for name, shape in (("spread", spread), ("fan-out", fanout), ("memory", memory)):
        if shape is not None:
            rows.append(
                Row(
                    f"CPU s generator / nginx worker, nchan {name}: hold; deliver",
                    cpu_text(shape.cpu_hold, shape.cpu_deliver),
                )
            )
    return rows


def table(rows: list[Row]) -> str:
    """A Markdown table, columns padded so it also reads in a terminal."""
    cells = [("figure", "measured", "target", "ok?")]
    cells += [
        (r.figure, r.measured, r.target, "-" if r.ok is None else ("yes" if r.ok else "no"))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]

    def line(row) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def report(args, results: Results, machine_rows) -> str:
    rows: list[Row] = []
    if results.spread is not None:
        rows += spread_rows(args, results)
    if results.cold is not None:
        rows += cold_rows(results)
    if results.fanout is not None:
        rows += fanout_rows(results)
    if results.memory is not None:
        rows += memory_rows(results)
    if results.sustained is not None:
        rows += sustained_rows(results)
    if results.scaling is not None:
        from bench import scaling

        rows += scaling.rows(results.scaling)
    if results.host is not None:
        from bench import host

        rows += host.rows(results.host)
    rows += nchan_rows(results)
    width = max(len(label) for label, _ in machine_rows)
    lines = [f"{label:<{width}}  {value}" for label, value in machine_rows]
    lines += ["", table(rows), ""]
    lines += [f"note: {note}" for note in results.notes]
    for name, verdict in (
        ("spread", results.spread_verdict),
        ("fan-out", results.fanout_verdict),
        ("cache probe", results.probe_verdict),
    ):
        if verdict is not None:
            sources = ", ".join(f"{k} {v}" for k, v in verdict.sources.most_common())
            lines.append(f"note: {name} answers by source: {sources or 'none'}")
    if results.spread is not None:
        redis = results.spread.observed["redis"]
        names = ", ".join(f"{name} {count}" for name, count in sorted(redis.by_name.items()))
        lines.append(f"note: Redis clients of the server: {redis.total} ({names})")
        lines.append(f"note: worker open-files limit {results.spread.observed['open files']}")
    lines.append(f"note: gunicorn problems (exits, log warnings/errors): {len(results.problems)}")
    lines += [f"problem, gunicorn: {line}" for line in results.problems[:6]]
    if results.nchan_spread is not None or results.nchan_fanout is not None:
        lines.append(f"note: nginx error log warnings/errors: {len(results.nginx_problems)}")
        lines += [f"problem, nginx: {line}" for line in results.nginx_problems[:6]]
    for name, verdict in (
        ("cold round", results.cold),
        ("cache probe", results.probe_verdict),
        ("spread", results.spread_verdict),
        ("fan-out", results.fanout_verdict),
        ("memory", results.memory_verdict),
        ("nchan spread", results.nchan_spread_verdict),
        ("nchan fan-out", results.nchan_fanout_verdict),
        ("nchan memory", results.nchan_memory_verdict),
    ):
        for sample in verdict.samples if verdict is not None else ():
            lines.append(f"problem, {name}: {sample}")
    if results.sustained is not None:
        for webhook in results.sustained.webhooks:
            if webhook.response is None or webhook.response.status != 200:
                lines.append(f"problem, sustained: {failure(webhook)}")
                break
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="N: spread orders and waits")
    parser.add_argument("--fanout", type=int, default=None, help="waits on one order (--orders)")
    parser.add_argument(
        "--sustained", type=int, default=2000, help="M: webhooks of the sustained shape"
    )
    parser.add_argument(
        "--memory-orders", type=int, default=10_000, help="the memory shape: waits and orders"
    )
    parser.add_argument(
        "--shapes",
        default="spread,fanout,sustained",
        help=f"a subset of {','.join(SHAPES)}",
    )
    parser.add_argument("--vs-nchan", action="store_true", help="the same shapes against nchan")
    parser.add_argument("--concurrency", type=int, default=20, help="webhooks in flight")
    parser.add_argument("--workers", type=int, default=2, help="the scaling shape: N workers")
    parser.add_argument("--host-workers", type=int, default=4, help="the host shape's workers")
    parser.add_argument(
        "--host-waits", type=int, default=40_000, help="the host shape: waits held in all"
    )
    parser.add_argument(
        "--host-per-process",
        type=int,
        default=10_000,
        help="the host shape: waits per generator process (each from its own 127.0.0.x)",
    )
    parser.add_argument("--timeout-ms", type=int, default=300_000, help="timeout of each wait")
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="orders of a first round on the cold worker, reported apart (0: none; at most N)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the shapes on one Redis and on a 3-shard Redis Cluster, 1 and 2 workers "
        "(bench/layouts.py; --fanout defaults to --orders)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy on the worker while each shape delivers: raw stacks in DIR, top functions",
    )
    args = parser.parse_args()
    args.fanout = args.orders if args.fanout is None else args.fanout
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = set(args.shapes) - set(SHAPES)
    if unknown or not args.shapes:
        parser.error(f"--shapes: choose from {', '.join(SHAPES)} (got {args.shapes})")
    sizes = (args.orders, args.fanout, args.sustained, args.memory_orders, args.concurrency)
    sizes += (args.timeout_ms,)
    if min(sizes) < 1 or args.warmup < 0:
        parser.error("sizes, --concurrency and --timeout-ms must be positive")
    if int(args.timeout_ms) > int(LONG_WAITS["LONGPOLL_MAX_TIMEOUT_MS"]):
        parser.error(f"--timeout-ms is at most {LONG_WAITS['LONGPOLL_MAX_TIMEOUT_MS']}")
    args.warmup = min(args.warmup, args.orders)
    return args


def held_at_most(args) -> int:
    """The most requests one shape holds at once."""
    spread = args.orders if "spread" in args.shapes else 0
    memory = args.memory_orders if "memory" in args.shapes else 0
    return max(spread, memory, args.fanout)


def run(args) -> int:
    fd_limit = raise_nofile_limit()
    held_max = held_at_most(args)
    needed = held_max + args.concurrency + FD_HEADROOM
    if needed > fd_limit:
        raise RuntimeError(f"open-files limit {fd_limit} is too low for {held_max} held requests")
    if args.vs_nchan and nchan_install() is None:
        raise RuntimeError("--vs-nchan needs nginx and libnginx-mod-nchan (apt-get install)")
    machine_rows = machine()
    secret = secrets.token_hex(16)
    results = Results()
    with ExitStack() as stack:
        progress("creating the database, starting redis-server and gunicorn")
        database_url = stack.enter_context(fresh_database(PG_ADMIN_URL, "orderwait_bench"))
        redis_url = stack.enter_context(private_redis())
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "WEBHOOK_SECRET": secret,
            **NO_ABUSE_LIMITS,
            **QUIET_BACKGROUND,
            **LONG_WAITS,
        }
        if held_max + FD_HEADROOM > DEFAULT_WORKER_CONNECTIONS:
            env["WORKER_CONNECTIONS"] = str(held_max + FD_HEADROOM)
        server = stack.enter_context(gunicorn(env))
        pg = OrdersReads(database_url)
        stack.callback(pg.close)
        profiler = Profiler(args.profile)
        app = App(server, redis_url, secret, pg, args, profiler)
        progress(f"gunicorn master {server.master.pid}, worker {server.worker}")
        try:
            run_app_shapes(app, results)
            results.notes += profiler.notes()
        finally:
            results.problems = server.changes() + log_problems(server.log)
            if results.problems or not results.passed():
                print_log_tail(server.log)
        if "memory" in args.shapes:
            results.memory = memory_shape(env, app)
            results.memory_verdict = judge(
                results.memory.answers, results.memory.triggers, paid_answer
            )
        if "scaling" in args.shapes:
            from bench import scaling

            progress(f"scaling: {args.sustained} webhooks at 1 and {args.workers} workers")
            results.scaling = scaling.run(env, args)
        if "host" in args.shapes:
            from bench import host

            progress(f"host: {args.host_waits} waits over {args.host_workers} workers")
            results.host = host.run(env, args)
            results.notes += [f"host, wrong or missing: {p}" for p in results.host.problems]
    if args.vs_nchan:
        run_nchan_shapes(args, results, fd_limit)
    print(report(args, results, machine_rows))
    return 0 if results.passed() else 1


def memory_shape(env: dict, app: App) -> Held:
    """The memory shape on a gunicorn of its own: no other shape's freed memory to reuse.
    A first round of waits opens its pools and fills its caches before the baseline, as
    every worker does once: those are the worker's, not its waits'."""
    m, concurrency = app.args.memory_orders, app.args.concurrency
    with gunicorn(env) as server:
        fresh = app._replace(server=server)
        progress(f"memory: a fresh worker {server.worker}, warmed with {MEMORY_WARMUP} waits")
        warm = create_orders(server.port, MEMORY_WARMUP, concurrency)
        asyncio.run(app_spread(fresh, warm, observe=False))
        progress(f"memory: creating {m} orders, holding a wait on each, then their webhooks")
        orders = create_orders(server.port, m, concurrency)
        shape = asyncio.run(app_spread(fresh, orders, observe=False))
        if problems := server.changes() + log_problems(server.log):
            raise RuntimeError(f"memory shape's gunicorn: {problems[:3]}")
        return shape


def run_app_shapes(app: App, results: Results) -> None:
    args, port = app.args, app.server.port
    if args.warmup:
        # The first requests of a fresh worker pay one-time costs (SQL compilation, new
        # database connections): measured and shown apart from the steady state.
        progress(f"cold round: {args.warmup} waits")
        warm = create_orders(port, args.warmup, args.concurrency)
        shape = asyncio.run(app_spread(app, warm, observe=False))
        results.cold = judge(shape.answers, shape.triggers, paid_answer)
    if "spread" in args.shapes:
        k = min(CACHE_PROBE_ORDERS, args.orders)
        progress(f"cache probe: {k} orders paid, then one wait each")
        probe_orders = create_orders(port, k, args.concurrency)
        results.probe = asyncio.run(cache_probe(app, probe_orders))
        results.probe_verdict = judge(results.probe.answers, results.probe.webhooks, paid_answer)
        progress(f"spread: creating {args.orders} orders")
        orders = create_orders(port, args.orders, args.concurrency)
        progress(f"spread: holding {args.orders} waits, then one webhook each")
        results.spread = asyncio.run(app_spread(app, orders, observe=True))
        results.spread_verdict = judge(results.spread.answers, results.spread.triggers, paid_answer)
    if "fanout" in args.shapes:
        progress(f"fan-out: holding {args.fanout} waits on one order, then its webhook")
        (order,) = create_orders(port, 1, 1)
        results.fanout = asyncio.run(app_fanout(app, order, args.fanout))
        results.fanout_verdict = judge(results.fanout.answers, results.fanout.triggers, paid_answer)
    if "sustained" in args.shapes:
        progress(f"sustained: creating {args.sustained} orders, then one webhook each")
        orders = create_orders(port, args.sustained, args.concurrency)
        results.sustained = asyncio.run(sustained(app, orders))


def run_nchan_shapes(args, results: Results, fd_limit: int) -> None:
    held_max = held_at_most(args)
    # nchan takes more than one connection slot per long-poll subscriber (5,000 subscribers
    # did not fit in 5,300 slots; 7,500 were enough): nginx drops the ones it cannot place.
    connections = min(2 * held_max + args.concurrency + FD_HEADROOM, fd_limit)
    # Messages the size of the app's answers, so both write the same bytes per answer.
    size = 400
    if results.spread is not None:
        sizes = [len(a.response.body) for a in results.spread.answers if a and a.response]
        size = max(sizes, default=size)
    tag = secrets.token_hex(4)

    # A fresh nginx for each shape: a worker that held the spread's subscribers reuses their
    # memory for the fan-out's, and its RSS would hardly move.
    def one_channel_each(name: str, n: int) -> tuple[Held, Verdict]:
        """n subscribers on n channels of their own, then one publish each."""
        progress(f"nchan {name}: holding {n} subscribers on {n} channels, then one publish each")
        channels = [f"{name[0]}{tag}_{i}" for i in range(n)]
        messages = [nchan_message(channel, size) for channel in channels]
        with nchan_nginx(connections, fd_limit) as nginx:
            shape = asyncio.run(nchan_spread(nginx, channels, messages, args))
            results.nginx_problems += nginx_problems(nginx.error_log)
        correct = judge(
            shape.answers, shape.triggers, lambda i, r: r.status == 200 and r.body == messages[i]
        )
        return shape, correct

    if "spread" in args.shapes:
        results.nchan_spread, results.nchan_spread_verdict = one_channel_each("spread", args.orders)
    if "memory" in args.shapes:
        m = args.memory_orders
        results.nchan_memory, results.nchan_memory_verdict = one_channel_each("memory", m)
    if "fanout" in args.shapes:
        progress(f"nchan fan-out: holding {args.fanout} subscribers on one channel")
        channel = f"f{tag}"
        message = nchan_message(channel, size)
        with nchan_nginx(connections, fd_limit) as nginx:
            shape = asyncio.run(nchan_fanout(nginx, channel, message, args.fanout))
            results.nginx_problems += nginx_problems(nginx.error_log)
        results.nchan_fanout = shape
        results.nchan_fanout_verdict = judge(
            shape.answers, shape.triggers, lambda _i, r: r.status == 200 and r.body == message
        )


def main() -> int:
    args = parse_args()
    # A SIGTERM to the benchmark unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.cluster:
            from bench import layouts

            raise_nofile_limit()
            return layouts.run(args, secrets.token_hex(16))
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
