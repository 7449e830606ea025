"""nginx in front of two app replicas, as docker-compose.yml runs them (deploy/nginx.conf).

The file itself: nothing buffers a held wait or times it out first, a request that reached a
replica is never sent again (but the idempotent webhook), upstream keepalive works and closes
before gunicorn's, and `nginx -t` accepts it. Then the topology on loopback: a private nginx
running a copy of the file in front of two gunicorn instances. One instance stops (SIGTERM)
and comes back while waits are held through nginx: every wait is answered, none sees a reset
or a 502, and a webhook on either instance wakes waits held on the other.
"""

import re
import socket
import subprocess
import sys
import time

import gevent
import pytest
import requests
import yaml
from gevent.server import StreamServer

from app.config.sections import Waits
from tests.support import servers
from tests.support.live import create, hub_stats, pay, wait
from tests.support.nginx import CONF, NGINX, Nginx, render

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)

WAITS = 40
WAIT_MS = 25_000
# Waits one client may make in the whole test: a bound, not an expectation (a stopping
# instance answers a wait sent again in its last second at once, so a few rounds are usual).
MAX_ROUNDS = 200


# -- the file -----------------------------------------------------------------------------


def directives(text: str) -> dict[str, list[str]]:
    """Every `name args;` of the file (comments dropped), by name: enough for flat checks."""
    found: dict[str, list[str]] = {}
    for name, args in re.findall(r"^\s*(\w+)\s+([^;{}]*);", re.sub(r"#.*", "", text), re.M):
        found.setdefault(name, []).append(" ".join(args.split()))
    return found


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def gunicorn_keepalive() -> int:
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['keepalive'])"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=servers.ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_nothing_buffers_or_times_out_a_held_wait():
    found = directives(CONF.read_text())
    assert found["proxy_buffering"] == ["off"]
    assert seconds(found["proxy_read_timeout"][0]) > Waits.longpoll_max_timeout_ms / 1000
    assert found["proxy_http_version"] == ["1.1"]
    # The image's command sets `daemon off` with -g: the file must not set it too.
    assert "daemon" not in found and "user" not in found


def locations(text: str) -> dict[str, str]:
    """The body of each `location <match> { ... }` without nested blocks, by match."""
    return {
        " ".join(m.group(1).split()): m.group(2)
        for m in re.finditer(r"location\s+([^{]+?)\s*\{([^{}]*)\}", re.sub(r"#.*", "", text))
    }


def test_only_requests_that_reached_no_replica_are_retried_but_the_idempotent_webhook():
    text = CONF.read_text()
    found = directives(text)
    server_wide = found["proxy_next_upstream"][0].split()
    assert "error" in server_wide
    # Creating an order twice is not safe: other POSTs are never resent. A 503 is the
    # app's own answer, which the other replica would give too.
    assert "non_idempotent" not in server_wide and "http_503" not in server_wide
    webhook = directives(locations(text)["= /api/payhero/callback"])
    assert webhook["proxy_next_upstream"] == ["error timeout non_idempotent"]
    assert "proxy_next_upstream" not in directives(locations(text)["/"])
    # Unbuffered request bodies would make nginx retry nothing at all.
    assert found.get("proxy_request_buffering", ["on"]) == ["on"]


def test_no_replica_is_ever_marked_down():
    """A killed worker's held waits all fail at once: counted as failures of its replica,
    they marked it down, and with the other replica restarting nginx had no live upstream."""
    servers_line = directives(CONF.read_text())["server"]
    assert servers_line and all("max_fails=0" in line.split() for line in servers_line)


def test_upstream_keepalive_closes_before_gunicorns():
    found = directives(CONF.read_text())
    assert int(found["keepalive"][0]) > 0
    idle = seconds(found["keepalive_timeout"][0])
    assert idle < gunicorn_keepalive()
    replica = yaml.safe_load((servers.ROOT / "docker-compose.yml").read_text())["services"]["app1"]
    assert idle < int(replica["environment"].get("GUNICORN_KEEPALIVE", gunicorn_keepalive()))
    # Plain requests send no Connection header (keepalive), upgrades send `upgrade`.
    assert "Connection $connection_upgrade" in found["proxy_set_header"]
    upgrade_map = re.search(
        r"map \$http_upgrade \$connection_upgrade \{([^}]*)\}", CONF.read_text()
    )
    assert re.search(r"^\s*''\s+'';", upgrade_map.group(1), re.M)


# -- a private nginx running a copy of the file -------------------------------------------


@pytest.fixture
def nginx(tmp_path):
    """Start private nginx instances in front of the given upstream ports; stopped after."""
    started = []

    def start(*upstreams: int) -> Nginx:
        folder = tmp_path / f"nginx{len(started)}"
        folder.mkdir()
        server = Nginx(folder, upstreams)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@needs_nginx
def test_nginx_accepts_the_file(tmp_path):
    conf = render(tmp_path, 8000, (8001, 8002))
    result = subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-p", f"{tmp_path}/", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


class RecordingUpstream:
    """A minimal HTTP/1.1 server that records each request's head and its connection, and
    tunnels bytes after a 101 (as a WebSocket endpoint would)."""

    def __init__(self):
        self.requests: list[tuple[int, dict]] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, sock: socket.socket, _address) -> None:
        stream = sock.makefile("rb")
        while line := stream.readline():
            headers = {}
            while (header := stream.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            self.requests.append((id(sock), {"request": line.decode().strip(), **headers}))
            if headers.get("upgrade") == "websocket":
                sock.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                )
                while data := sock.recv(1024):
                    sock.sendall(data.upper())
                return
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def stop(self) -> None:
        self.server.stop(timeout=1)


@needs_nginx
def test_headers_keepalive_and_websocket_upgrades_reach_the_app(nginx):
    upstream = RecordingUpstream()
    try:
        # Both upstream entries on one server: every request lands on it.
        proxy = nginx(upstream.port, upstream.port)
        with requests.Session() as session:
            for _ in range(5):
                response = session.get(proxy.url + "/healthz?x=1", timeout=5)
                assert response.status_code == 200 and response.text == "ok"
        plain = [head for _, head in upstream.requests]
        assert len(plain) == 5
        # Plain requests: no Connection header, so nginx reuses its upstream connections.
        assert len({conn for conn, _ in upstream.requests}) < 5
        for head in plain:
            assert head["request"] == "GET /healthz?x=1 HTTP/1.1"
            assert "connection" not in head and "upgrade" not in head
            assert head["x-forwarded-for"] == "127.0.0.1"
            assert head["x-forwarded-proto"] == "http"

        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(
                b"GET /api/orders/x/ws HTTP/1.1\r\nHost: localhost\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1024)
            assert head.startswith(b"HTTP/1.1 101"), head
            sock.sendall(b"ping")
            assert sock.recv(16) == b"PING"
        upgrade = upstream.requests[-1][1]
        assert upgrade["connection"] == "upgrade" and upgrade["upgrade"] == "websocket"
    finally:
        upstream.stop()


# -- the topology on loopback -------------------------------------------------------------


class Client:
    """A browser on an order page: holds a wait through nginx and asks again at once after
    each unchanged answer, until the order changes."""

    def __init__(self, proxy: Nginx, order: dict):
        self.proxy = proxy
        self.order = order
        self.answers: list[tuple[int, dict | str]] = []
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        for _ in range(MAX_ROUNDS):
            response = wait(self.proxy, self.order, timeout_ms=WAIT_MS)
            is_json = response.headers.get("Content-Type", "").startswith("application/json")
            self.answers.append(
                (response.status_code, response.json() if is_json else response.text)
            )
            if response.status_code != 200 or response.json()["changed"]:
                return

    def sources(self) -> list[str]:
        return [body["source"] for status, body in self.answers if status == 200]


@needs_nginx
def test_waits_through_nginx_survive_a_replica_restart(live_server, nginx, redis_client):
    started = time.monotonic()
    first, second = live_server(), live_server()
    proxy = nginx(first.port, second.port)

    orders = [create(proxy) for _ in range(WAITS)]
    clients = [Client(proxy, order) for order in orders]
    servers.eventually(
        lambda: hub_stats(first)["parked"] + hub_stats(second)["parked"] == WAITS,
        10,
        f"{WAITS} waits held across both instances",
    )
    on_first, on_second = hub_stats(first)["parked"], hub_stats(second)["parked"]
    assert on_first > 0 and on_second > 0 and on_first + on_second == WAITS

    # SIGTERM: the first instance answers what it holds, at once, and stops; the clients
    # ask again through nginx and land on the second.
    stopping = gevent.spawn(first.terminate)
    servers.eventually(
        lambda: sum("shutdown" in c.sources() for c in clients) == on_first,
        5,
        "the first instance's waits answered",
    )
    servers.eventually(
        lambda: hub_stats(second)["parked"] == WAITS, 10, "every wait held on the second instance"
    )
    stopped_in = stopping.get(timeout=20)
    assert all(not c.greenlet.ready() for c in clients), [c.answers for c in clients]

    first = live_server(port=first.port)
    paid = [gevent.spawn(pay, proxy, order) for order in orders]
    gevent.joinall(paid, timeout=15, raise_error=True)
    assert [p.value.status_code for p in paid] == [200] * WAITS
    gevent.joinall([c.greenlet for c in clients], timeout=15, raise_error=True)

    for client in clients:
        assert client.greenlet.successful(), client.answers
        assert all(status == 200 for status, _ in client.answers), client.answers
        *unchanged, (_, last) = client.answers
        # "shutdown" from the stopping instance; "timeout" when the wait asked again
        # reached it again in the moment before it stopped accepting.
        assert all(
            body["changed"] is False and body["source"] in ("shutdown", "timeout")
            for _, body in unchanged
        ), client.answers
        assert last["changed"] is True and last["paymentStatus"] == "completed", last
        assert last["orderId"] == client.order["orderId"]
    assert sum("shutdown" in c.sources() for c in clients) == on_first

    # nginx itself answered nothing but 2xx: no 502 and no reset client on the way.
    log = proxy.log()
    assert [e for e in log if not e["status"].startswith("2")] == []

    # A webhook taken by one instance wakes a wait held on the other.
    order = create(proxy)
    crossing = gevent.spawn(wait, second, order, timeout_ms=WAIT_MS)
    servers.eventually(lambda: hub_stats(second)["parked"] == 1, 5, "a wait held on the second")
    assert pay(first, order).status_code == 200
    body = crossing.get(timeout=5).json()
    assert body["changed"] is True and body["paymentStatus"] == "completed"
    assert body["source"] == "redis"

    rounds = sorted(len(c.answers) for c in clients)
    retried = [e for e in log if "," in e["upstream_status"]]
    print(
        f"\n{on_first}/{WAITS} waits on the stopped instance; it exited in {stopped_in:.1f}s;"
        f" rounds per client {rounds[0]}..{rounds[-1]}; {len(retried)} requests nginx sent"
        f" to the other instance; test {time.monotonic() - started:.1f}s"
    )
    assert time.monotonic() - started < 45
