"""Leases of streams and waits (app/realtime/connections.py LeaseLimiter), on the real Redis:
a lease left by a worker of this host that is gone does not hold its owner's slot."""

import socket
import subprocess
import sys

import pytest

from app.realtime.connections import WORKER_ID, LeaseLimiter
from tests.support.servers import eventually

HOST = socket.gethostname()


@pytest.fixture
def limiter(redis_client):
    return LeaseLimiter(redis_client, limit=1, lease=30, prefix="test:leases:")


@pytest.fixture
def running_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield process.pid
    process.kill()
    process.wait()


def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lease_of_a_worker_that_is_gone_makes_room(limiter):
    assert limiter.acquire("token", f"{HOST}:{gone_pid()}:old") is not None
    mine = f"{WORKER_ID}:new"
    assert limiter.acquire("token", mine) == mine
    assert limiter._client.zrange(limiter._key("token"), 0, -1) == [mine]


def test_leases_of_running_workers_and_other_hosts_hold_their_slots(limiter, running_pid):
    assert limiter.acquire("token", f"{HOST}:{running_pid}:held") is not None
    assert limiter.acquire("token", f"{WORKER_ID}:new") is None
    assert limiter.acquire("other", f"elsewhere-{HOST}:{gone_pid()}:held") is not None
    assert limiter.acquire("other", f"{WORKER_ID}:new") is None


def test_a_lease_that_could_not_be_given_back_is_given_back_once_redis_answers(private_redis):
    import redis

    server = private_redis()
    client = redis.Redis(port=server.port, socket_timeout=0.3, decode_responses=True)
    limiter = LeaseLimiter(client, limit=1, lease=30, prefix="test:leases:")
    mine = f"{WORKER_ID}:frozen"
    assert limiter.acquire("token", mine) == mine
    server.freeze()
    try:
        limiter.release("token", mine)  # times out: Redis does not answer
    finally:
        server.thaw()
    eventually(lambda: client.zcard(limiter._key("token")) == 0, 5, "the lease given back")
    assert limiter.acquire("token", f"{WORKER_ID}:next") is not None
