"""The load of a chaos campaign: customers, the provider's webhooks and admins, each
behaving as the real ones do, and each recording what it was answered (bench/chaos_history.py).

- A customer creates an order (some send a bad body first), then follows it as the order
  page does: long polls with `since`, a plain read after a network error, Retry-After after
  a 503, a short random pause after the server's shutdown answer. Some customers also follow
  over SSE (reconnecting with Last-Event-ID) or WebSocket (with ?lastEventId=).
- The provider pays most orders after a short delay: success, cancel or failure; some
  deliveries are duplicated, some orders get a second, conflicting outcome (sent at once or
  after), some deliveries are forged first (a 401 is their right answer). Like a provider,
  it delivers again until it gets a 2xx or a 4xx.
- Admins follow the statistics stream, reconnecting with their last id.

Every loop is bounded by the campaign's deadline.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import gevent
import requests
from gevent.event import Event
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as connect_websocket

from app.payments.signature import sign
from bench.chaos_history import TERMINAL, Answer, History, Seen
from tests.support.helpers import WEBHOOK_SECRET, callback_body, order_body
from tests.support.sse import Frame, parse_line

WAIT_TIMEOUT_MS = 15_000
READ_TIMEOUT_S = 25.0  # above the wait's timeout and the streams' heartbeats
OUTCOMES = ((0, 0.75), (1032, 0.15), (2001, 0.10))  # M-PESA result codes: paid, cancelled, failed


class Load:
    def __init__(self, url: str, history: History, seed: int):
        self.url = url
        self.history = history
        self.rng = random.Random(seed + 2)
        self.following = Event()  # cleared: followers give up (the campaign is over)
        self.following.set()
        self.admins_on = Event()
        self.admins_on.set()
        self._greenlets: list[gevent.Greenlet] = []
        self._clients = 0

    def client(self, kind: str) -> str:
        self._clients += 1
        return f"{kind}{self._clients}"

    def spawn(self, function, *args) -> None:
        self._greenlets.append(gevent.spawn(function, *args))

    def run_customers(self, seconds: float, per_second: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.spawn(self.customer, self.rng.random())
            gevent.sleep(self.rng.expovariate(per_second))

    def start_admins(self, tokens: tuple[str, ...]) -> None:
        for token in tokens:
            self.spawn(self.admin, token)

    def finish(self, grace: float) -> None:
        """Let followers see the end of their orders for `grace` seconds, then stop all."""
        gevent.joinall(self._greenlets, timeout=grace)
        self.following.clear()
        self.admins_on.clear()
        gevent.joinall(self._greenlets, timeout=READ_TIMEOUT_S + 10)
        gevent.killall([g for g in self._greenlets if not g.dead], timeout=5)

    # -- requests --------------------------------------------------------------------------

    def request(self, session, client, kind, order, method, path, bad_input=False, **kwargs):
        """One request, recorded; the response, or None when none came."""
        started = time.time()
        try:
            response = session.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            self.history.answers.append(
                Answer(client, kind, order, started, time.time(), None, error=type(exc).__name__)
            )
            return None
        self.history.answers.append(
            Answer(
                client,
                kind,
                order,
                started,
                time.time(),
                response.status_code,
                retry_after="Retry-After" in response.headers,
                bad_input=bad_input,
            )
        )
        return response

    def pause_after(self, response) -> float:
        if response is not None and response.status_code in (429, 503):
            return float(response.headers.get("Retry-After", 1))
        return self.rng.uniform(0.2, 1.0)

    # -- customers -------------------------------------------------------------------------

    def customer(self, draw: float) -> None:
        session = requests.Session()
        client = self.client("customer")
        if draw < 0.05:
            bad = {**order_body(), "amount": -1}
            self.request(
                session, client, "create", None, "POST", "/api/orders", True, json=bad, timeout=10
            )
        order = None
        deadline = time.monotonic() + 60
        while order is None and time.monotonic() < deadline and self.following.is_set():
            response = self.request(
                session,
                client,
                "create",
                None,
                "POST",
                "/api/orders",
                json=order_body(),
                timeout=10,
            )
            if response is not None and response.status_code == 201:
                order = response.json()
            else:
                gevent.sleep(self.pause_after(response))
        if order is None:
            return
        self.spawn(self.wait_follower, order)
        if self.rng.random() < 0.3:
            self.spawn(self.sse_follower, order)
        if self.rng.random() < 0.3:
            self.spawn(self.ws_follower, order)
        if self.rng.random() < 0.92:
            gevent.sleep(self.rng.uniform(0.3, 4.0))
            self.provider(order)

    def _saw(self, client: str, order_id: str, body: dict) -> bool:
        self.history.seen.append(
            Seen(client, order_id, time.time(), body["version"], body["paymentStatus"])
        )
        return body["paymentStatus"] in TERMINAL

    def wait_follower(self, order: dict) -> None:
        session, client, order_id = requests.Session(), self.client("wait"), order["orderId"]
        self.history.follow(client, "wait", order_id)
        auth = {"Authorization": f"Bearer {order['accessToken']}"}
        since = order["version"]
        while self.following.is_set():
            path = f"/api/orders/{order_id}/wait?since={since}&timeout={WAIT_TIMEOUT_MS}"
            response = self.request(
                session,
                client,
                "wait",
                order_id,
                "GET",
                path,
                headers=auth,
                timeout=(5, READ_TIMEOUT_S),
            )
            if response is not None and response.status_code == 200:
                body = response.json()
                if self._saw(client, order_id, body):
                    return
                since = max(since, body["version"])
                if body["source"] == "shutdown":
                    gevent.sleep(self.rng.uniform(0.1, 0.5))
                continue
            gevent.sleep(self.pause_after(response))
            if response is None or response.status_code >= 500:
                # The order page reads the order once the long poll failed.
                read = self.request(
                    session,
                    client,
                    "poll",
                    order_id,
                    "GET",
                    f"/api/orders/{order_id}",
                    headers=auth,
                    timeout=10,
                )
                if read is not None and read.status_code == 200:
                    if self._saw(client, order_id, read.json()):
                        return

    def sse_follower(self, order: dict) -> None:
        session, client, order_id = requests.Session(), self.client("sse"), order["orderId"]
        self.history.follow(client, "sse", order_id)
        auth = {"Authorization": f"Bearer {order['accessToken']}"}
        last_id = None
        while self.following.is_set():
            headers = {**auth, **({"Last-Event-ID": str(last_id)} if last_id else {})}
            response = self.request(
                session,
                client,
                "sse",
                order_id,
                "GET",
                f"/api/orders/{order_id}/events",
                headers=headers,
                stream=True,
                timeout=(5, READ_TIMEOUT_S),
            )
            if response is None or response.status_code != 200:
                if response is not None and response.status_code == 204:
                    return  # settled and seen: the server says there is nothing more
                gevent.sleep(self.pause_after(response))
                continue
            retry_ms = None
            try:
                for frame in _sse_events(response):
                    if frame.retry:
                        retry_ms = int(frame.retry)
                    if frame.event != "order_status":
                        continue
                    last_id = int(frame.id)
                    if self._saw(client, order_id, frame.json()):
                        return
            except (requests.RequestException, OSError, ValueError):
                pass  # the stream was cut: reconnect
            finally:
                response.close()
            gevent.sleep(retry_ms / 1000 if retry_ms else self.rng.uniform(0.2, 1.0))

    def ws_follower(self, order: dict) -> None:
        client, order_id = self.client("ws"), order["orderId"]
        self.history.follow(client, "ws", order_id)
        base = urlparse(self.url)
        auth = {"Authorization": f"Bearer {order['accessToken']}"}
        last_id = None
        while self.following.is_set():
            query = f"?lastEventId={last_id}" if last_id else ""
            url = f"ws://{base.netloc}/api/orders/{order_id}/ws{query}"
            started = time.time()
            try:
                ws = connect_websocket(url, additional_headers=auth, open_timeout=10)
            except InvalidStatus as exc:
                status = exc.response.status_code
                self.history.answers.append(
                    Answer(
                        client,
                        "ws",
                        order_id,
                        started,
                        time.time(),
                        status,
                        retry_after="Retry-After" in exc.response.headers,
                    )
                )
                gevent.sleep(1.0 if status == 503 else self.rng.uniform(0.2, 1.0))
                continue
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.history.answers.append(
                    Answer(client, "ws", order_id, started, time.time(), None, error=repr(exc))
                )
                gevent.sleep(self.rng.uniform(0.2, 1.0))
                continue
            self.history.answers.append(Answer(client, "ws", order_id, started, time.time(), 101))
            try:
                with ws:
                    while self.following.is_set():
                        try:
                            update = json.loads(ws.recv(timeout=READ_TIMEOUT_S))
                        except TimeoutError:
                            continue
                        last_id = update["id"]
                        if self._saw(client, order_id, update["payload"]):
                            return
            except ConnectionClosed:
                pass  # going away, or cut: reconnect with the last id
            gevent.sleep(self.rng.uniform(0.1, 0.5))

    # -- the provider ------------------------------------------------------------------------

    def provider(self, order: dict) -> None:
        codes, weights = zip(*OUTCOMES, strict=True)
        code = self.rng.choices(codes, weights)[0]
        body = callback_body(order["orderNumber"], result_code=code, amount=300)
        deliveries = [body]
        if self.rng.random() < 0.25:
            deliveries.append(body)  # a duplicate
        if self.rng.random() < 0.15:
            other = self.rng.choice([c for c in codes if c != code])
            conflicting = callback_body(order["orderNumber"], result_code=other, amount=300)
            # Out of order: the conflicting outcome may arrive first.
            deliveries.insert(self.rng.randrange(len(deliveries) + 1), conflicting)
        if self.rng.random() < 0.05:
            self.deliver(order["orderId"], body, forged=True)
        together = self.rng.random() < 0.5
        for delivery in deliveries:
            if together:
                self.spawn(self.deliver, order["orderId"], delivery)
            else:
                self.deliver(order["orderId"], delivery)
                gevent.sleep(self.rng.uniform(0.0, 1.0))

    def deliver(self, order_id: str, body: bytes, forged: bool = False) -> None:
        session, client = requests.Session(), self.client("provider")
        secret = "not-the-secret" if forged else WEBHOOK_SECRET
        headers = {"X-Webhook-Signature": sign(body, secret), "Content-Type": "application/json"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = self.request(
                session,
                client,
                "webhook",
                order_id,
                "POST",
                "/api/payhero/callback",
                forged,
                data=body,
                headers=headers,
                timeout=15,
            )
            if response is not None and response.status_code < 500:
                return
            gevent.sleep(self.pause_after(response))

    # -- admins ------------------------------------------------------------------------------

    def admin(self, token: str) -> None:
        session, client = requests.Session(), self.client("admin")
        last_id = None
        while self.admins_on.is_set():
            headers = {"Authorization": f"Bearer {token}"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            response = self.request(
                session,
                client,
                "admin",
                None,
                "GET",
                "/api/admin/stats/stream",
                headers=headers,
                stream=True,
                timeout=(5, READ_TIMEOUT_S),
            )
            if response is None or response.status_code != 200:
                gevent.sleep(self.pause_after(response))
                continue
            try:
                for frame in _sse_events(response):
                    last_id = frame.id or last_id
                    if not self.admins_on.is_set():
                        break
            except (requests.RequestException, OSError):
                pass
            finally:
                response.close()
            gevent.sleep(self.rng.uniform(0.2, 1.0))


def _sse_events(response) -> Iterator[Frame]:
    """The frames of an SSE response, heartbeats included, as they arrive."""
    frame = Frame()
    for line in response.iter_lines(decode_unicode=True):
        if line:
            parse_line(frame, line)
        elif frame != Frame():
            yield frame
            frame = Frame()
