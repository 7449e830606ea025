"""A Redis Sentinel setup of a test's own: a primary, a replica and three sentinels, each a
redis-server on a free loopback port with its files in a temp dir, torn down after."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.servers import RedisServer, answers_ping, free_port, wait_until

MASTER_NAME = "orderwait"
# Short, so a test sees a failover in seconds: the primary is down after 1 s of silence,
# and a failover that stalls is retried after 4 s.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000


class Sentinel:
    """One sentinel process (redis-server --sentinel), its config file its own to rewrite."""

    def __init__(self, folder: Path, primary_port: int):
        self.port = free_port()
        config = folder / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: answers_ping(self.port), 10, message=f"sentinel on {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SentinelSetup:
    """A primary, its replica, three sentinels with a quorum of two."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="orderwait-sentinel-"))
        self.primary = RedisServer()
        self.replica = RedisServer(replica_of=self.primary.port)
        wait_until(self._replica_in_sync, 10, message="the replica in sync")
        self.sentinels = [Sentinel(self.folder, self.primary.port) for _ in range(3)]
        wait_until(self._sentinels_know_everyone, 15, message="sentinels found each other")

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for the app."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def master_port(self) -> int | None:
        """The primary's port as the sentinels report it now."""
        try:
            host_port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER_NAME)
        except redis.RedisError:
            return None
        return int(host_port[1]) if host_port else None

    def _replica_in_sync(self) -> bool:
        info = redis.Redis(port=self.replica.port, socket_timeout=1).info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_know_everyone(self) -> bool:
        for sentinel in self.sentinels:
            master = sentinel.client().sentinel_master(MASTER_NAME)
            if int(master["num-other-sentinels"]) < 2 or int(master["num-slaves"]) < 1:
                return False
        return True

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
