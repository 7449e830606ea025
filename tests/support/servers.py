"""Real servers started by the tests: private redis-servers and gunicorn on loopback."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gevent
import psycopg2
import requests
from gevent.event import Event
from gevent.server import StreamServer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def eventually(predicate, timeout: float = 5.0, message: str = "condition"):
    """wait_until with the message as third argument, for readable calls in tests."""
    return wait_until(predicate, timeout, interval=0.02, message=message)


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database, schema built by `flask db upgrade`, dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin_url.rpartition("/")[0] + "/" + name
            try:
                flask_db_upgrade({"DATABASE_URL": url})
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"flask db upgrade failed:\n{exc.stderr.decode()}") from None
            yield url
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def flask_db_upgrade(env: dict) -> None:
    """Build the schema exactly as a deployment does: `flask --app wsgi db upgrade`."""
    subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )


def answers_ping(port: int) -> bool:
    """A redis-server (or sentinel) on this loopback port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server of a test's own, so it can be stopped without touching the shared one."""

    def __init__(
        self,
        port: int | None = None,
        *,
        replica_of: int | None = None,
        options: tuple[str, ...] = (),
    ):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # Its files (a replica's synced copy, say) in a temp dir of its own, not the cwd.
        self.folder = tempfile.mkdtemp(prefix="orderwait-redis-")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--dir",
                self.folder,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
                *(["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: answers_ping(self.port), 10, message=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and the kernel still accepts, but nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


class TcpProxy:
    """A loopback TCP proxy, run by the test process's gevent loop, that tests can break.

    stop() refuses new connections and drops the open ones (a server that went away);
    start() serves again on the same port; mute() silences every open connection in both
    directions while new ones pass normally (a connection that silently stopped answering,
    as the old side of a failover); pause() holds back what every connection carries, and
    resume() passes it on (a server that stalls for a while); `delay` holds back each chunk
    that many seconds (a slow link).
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._muted: set[tuple[socket.socket, socket.socket]] = set()
        self._flowing = Event()
        self._flowing.set()
        self.delay = 0.0
        self._server: StreamServer | None = None
        self.start()

    def start(self) -> None:
        self._server = StreamServer(("127.0.0.1", self.port), self._handle)
        self._server.init_socket()
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            for sock in pair:
                sock.close()

    def mute(self) -> None:
        self._muted |= self._pairs

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _handle(self, client: socket.socket, _address) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        pair = (client, upstream)
        self._pairs.add(pair)
        try:
            gevent.joinall(
                [
                    gevent.spawn(self._pipe, pair, client, upstream),
                    gevent.spawn(self._pipe, pair, upstream, client),
                ],
                count=1,
            )
        finally:
            self._pairs.discard(pair)
            self._muted.discard(pair)
            client.close()
            upstream.close()

    def _pipe(self, pair, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                if self.delay:
                    gevent.sleep(self.delay)
                if pair not in self._muted:
                    target.sendall(data)
        except OSError:
            pass


class LiveServer:
    """gunicorn with the repo's gunicorn.conf.py, one gevent worker, on a free loopback port."""

    def __init__(self, env: dict, workers: int = 1, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        # The metrics directory is the test's, so a killed server leaves nothing behind.
        self.metrics_dir = tempfile.mkdtemp(prefix="gunicorn-metrics-")
        env = {"PROMETHEUS_MULTIPROC_DIR": self.metrics_dir, **env}
        self.proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-c",
                "gunicorn.conf.py",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(workers),
                "wsgi:app",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(self._healthy, 20, interval=0.05, message=f"gunicorn on {self.port}")
        except BaseException:
            self.stop()  # the fixture never saw it: leave no process or directory behind
            raise

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{self.output()}")
        try:
            return requests.get(self.url + "/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> float:
        """Graceful stop, as a deployment does it (SIGTERM to the master); returns seconds
        until the master exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        """Kill master and workers at once, for tests that are not about shutting down: a
        graceful stop costs each test half a second, and the shutdown tests cover it."""
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        finally:
            Path(self.log.name).unlink(missing_ok=True)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
