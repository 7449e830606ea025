"""The deployment a chaos campaign runs against, all on loopback and all its own:

- PostgreSQL: a private server made with `initdb` and run with `pg_ctl` in a temp dir, so it
  can be restarted and its backends terminated without touching the machine's own;
- Redis: a private redis-server, killed and started again on the same port;
- two gunicorn instances with two gevent workers each, each reaching Redis through a TCP
  proxy of its own: the link that gets latency or a partition (the kernel's netem is not
  available on every machine; the proxy needs no privileges);
- nginx running a copy of deploy/nginx.conf in front of the instances.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

import psycopg2

from tests.support import postgres, servers
from tests.support.helpers import WEBHOOK_SECRET
from tests.support.nginx import Nginx

ADMIN_TOKENS = ("chaos-admin-1", "chaos-admin-2")
DATABASE = "orderwait"
# What the instances run with besides the addresses: no per-address limits (every client
# comes through one nginx), presence reported every second so the leak check is quick.
SETTINGS = {
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "ADMIN_TOKENS": ",".join(ADMIN_TOKENS),
    "ORDER_CREATE_RATE_LIMIT": "",
    "WAITS_PER_CLIENT": "0",
    "PROXY_FIX_X_FOR": "1",
    "PRESENCE_INTERVAL": "1",
    "SSE_HEARTBEAT_INTERVAL": "5",
    "LOG_LEVEL": "WARNING",
}


def _postgres_bin(name: str) -> str:
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    found = shutil.which(name) or (installed[-1] if installed else None)
    if found is None:
        raise RuntimeError(f"{name} not found (Debian: apt-get install postgresql)")
    return found


class PostgresServer:
    """A PostgreSQL server of the campaign's own (initdb + pg_ctl); as root, it runs as the
    postgres user, which initdb requires."""

    def __init__(self):
        self.port = servers.free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="orderwait-pg-"))
        self.data = self.folder / "data"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")
            self.start()
            with closing(self.connect("postgres")) as conn, conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DATABASE}")
        except BaseException:
            self.destroy()
            raise

    def _run(self, tool: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*as_postgres, _postgres_bin(tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", *args)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """A fast restart: every backend is terminated, the server is back in a second."""
        self._ctl("-m", "fast", "restart")

    def connect(self, database: str = DATABASE):
        conn = psycopg2.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{database}")
        conn.autocommit = True
        return conn

    def terminate_backends(self) -> int:
        return postgres.terminate_backends(self.url)

    def destroy(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.folder, ignore_errors=True)


class Instance:
    """One gunicorn instance and its own link to Redis."""

    def __init__(self, name: str, env: dict, redis_port: int, workers: int):
        self.name = name
        self.link = servers.TcpProxy(redis_port)
        self.env = {**env, "REDIS_URL": f"redis://127.0.0.1:{self.link.port}/0"}
        self.workers = workers
        self.port = servers.free_port()
        self.server: servers.LiveServer | None = None
        self.errors: list[str] = []  # ERROR lines of its logs, across restarts
        self.killed_pids: list[int] = []
        self.start()

    def start(self) -> None:
        self.server = servers.LiveServer(self.env, workers=self.workers, port=self.port)

    def worker_pids(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.server.proc.pid)], capture_output=True, text=True
        )
        return [int(pid) for pid in found.stdout.split()]

    def stop_gracefully(self) -> None:
        self.server.terminate(60)
        self._retire()

    def keep_errors(self) -> None:
        """Keep what the running server logged at ERROR (with its traceback), as its log
        goes when it stops."""
        keeping = False
        for line in self.server.output().splitlines():
            if re.match(r"\d{4}-\d\d-\d\d", line) or line.startswith("["):
                keeping = " ERROR " in line or "[ERROR]" in line
            if keeping:
                self.errors.append(line)

    def _retire(self) -> None:
        self.keep_errors()
        self.server.stop()
        self.server = None

    def destroy(self) -> None:
        if self.server is not None:
            self._retire()
        self.link.stop()


class Deployment:
    def __init__(self, instances: int = 2, workers: int = 2):
        self.postgres = PostgresServer()
        self.redis = None
        self.instances: list[Instance] = []
        self.nginx = None
        self._folder = Path(tempfile.mkdtemp(prefix="orderwait-chaos-"))
        try:
            servers.flask_db_upgrade({"DATABASE_URL": self.postgres.url})
            self.redis = servers.RedisServer()
            env = {**SETTINGS, "DATABASE_URL": self.postgres.url}
            self.instances = [
                Instance(f"app{n + 1}", env, self.redis.port, workers) for n in range(instances)
            ]
            nginx_folder = self._folder / "nginx"
            nginx_folder.mkdir()
            self.nginx = Nginx(nginx_folder, tuple(i.port for i in self.instances))
        except BaseException:
            self.destroy()
            raise
        self.url = self.nginx.url

    def restart_redis(self) -> None:
        """Start Redis again, on the same port and empty, as a restarted cache server is."""
        port = self.redis.port
        self.redis.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.redis = servers.RedisServer(port=port)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def destroy(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for instance in self.instances:
            instance.destroy()
        if self.redis is not None:
            self.redis.stop()
        self.postgres.destroy()
        shutil.rmtree(self._folder, ignore_errors=True)
