"""`flask simulate`: a flash sale played against a running server.

Each customer creates an order, then waits for it exactly as the order page does: long polls
with `since`, up to ORDER_PAGE_MAX_LONG_POLLS of them ORDER_PAGE_RETRY_PAUSE_MS apart, plain
polling after a server error. Meanwhile the "provider" sends the signed callback after an
M-PESA-like delay (most 10-40 s; some cancelled, some failed, a few never). `--time-scale`
shrinks every delay and timeout for quick runs. The summary says how many payments reached
their customer, what each cost in requests (against an estimate for 3 s interval polling),
how long after the callback the answer came, and how many customers gave up waiting.

Run with `flask --app wsgi simulate`: wsgi.py patches gevent first, so the thousands of
customers are greenlets and urllib is cooperative.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import click
import gevent
from flask import current_app
from gevent.pool import Pool

from app.payments.signature import sign

OUTCOMES = [
    ("success", 0, 0.80),
    ("cancel", 1032, 0.10),
    ("fail", 2001, 0.05),
    ("never", None, 0.05),
]
INTERVAL_POLLING_MS = 3000  # what a page polling every 3 s would have sent instead
TERMINAL = {"completed", "cancelled", "failed", "expired"}


@dataclass
class Customer:
    outcome: str
    delay_s: float
    requests: int = 0
    created_at: float | None = None
    callback_at: float | None = None
    answered_at: float | None = None
    final_status: str | None = None
    gave_up: bool = False
    errors: list[str] = field(default_factory=list)


class Http:
    """Tiny JSON-over-HTTP client on urllib (cooperative under gevent)."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers=None,
        timeout: float = 30,
    ) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path,
            data=body,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


class FlashSale:
    def __init__(self, http: Http, secret: str, *, scale: float, seed: int | None):
        cfg = current_app.config
        self.http = http
        self.secret = secret
        self.random = random.Random(seed)
        self.long_poll_ms = max(int(60_000 * scale), 100)
        self.max_long_polls = cfg["ORDER_PAGE_MAX_LONG_POLLS"]
        self.pause_s = 5.0 * scale
        self.fallback_s = INTERVAL_POLLING_MS / 1000 * scale
        self.scale = scale

    def customer(self) -> Customer:
        names, _codes, shares = zip(*OUTCOMES, strict=True)
        outcome = self.random.choices(names, weights=shares)[0]
        return Customer(outcome=outcome, delay_s=self.random.uniform(10, 40) * self.scale)

    def play(self, customer: Customer) -> None:
        status, order = self.http.call(
            "POST",
            "/api/orders",
            body=json.dumps(
                {
                    "amount": 300,
                    "customer": {
                        "email": "buyer@example.com",
                        "firstName": "Flash",
                        "lastName": "Sale",
                    },
                }
            ).encode(),
        )
        if status != 201:
            customer.errors.append(f"create {status}")
            return
        customer.created_at = time.monotonic()
        provider = gevent.spawn(self.provider, customer, order)
        try:
            self.wait_like_the_page(customer, order)
        finally:
            provider.kill()

    def provider(self, customer: Customer, order: dict) -> None:
        code = dict((name, code) for name, code, _ in OUTCOMES)[customer.outcome]
        if code is None:
            return  # the customer never answers the prompt
        gevent.sleep(customer.delay_s)
        body = json.dumps(
            {
                "status": True,
                "response": {
                    "Amount": order["totalAmount"],
                    "ExternalReference": order["orderNumber"],
                    "ResultCode": code,
                    "MpesaReceiptNumber": "FLASH",
                    "CheckoutRequestID": "ws_CO_flash",
                },
            }
        ).encode()
        customer.callback_at = time.monotonic()
        status, _ = self.http.call(
            "POST",
            "/api/payhero/callback",
            body=body,
            headers={"X-Webhook-Signature": sign(body, self.secret)},
        )
        if status != 200:
            customer.errors.append(f"callback {status}")

    def wait_like_the_page(self, customer: Customer, order: dict) -> None:
        auth = {"Authorization": f"Bearer {order['accessToken']}"}
        since, polls = order["version"], 0
        while polls < self.max_long_polls:
            customer.requests += 1
            try:
                status, answer = self.http.call(
                    "GET",
                    f"/api/orders/{order['orderId']}/wait?since={since}"
                    f"&timeout={self.long_poll_ms}",
                    headers=auth,
                    timeout=self.long_poll_ms / 1000 + 30,
                )
            except OSError as error:
                status, answer = 599, {"error": str(error)}
            if status >= 500:
                answer = self.poll_until_answered(customer, order, auth)
            elif status != 200:
                customer.errors.append(f"wait {status}")
                return
            since = max(since, answer["version"])
            if answer["paymentStatus"] in TERMINAL:
                customer.answered_at = time.monotonic()
                customer.final_status = answer["paymentStatus"]
                return
            if not answer.get("changed", True):
                polls += 1
                if polls < self.max_long_polls:
                    gevent.sleep(self.pause_s)
        customer.gave_up = True  # the page now shows "still processing"

    def poll_until_answered(self, customer: Customer, order: dict, auth: dict) -> dict:
        delay = self.fallback_s
        while True:
            gevent.sleep(delay * (0.5 + self.random.random()))
            customer.requests += 1
            try:
                status, answer = self.http.call(
                    "GET", f"/api/orders/{order['orderId']}", headers=auth
                )
            except OSError:
                status, answer = 599, {}
            if status == 200:
                return {**answer, "changed": True}
            delay = min(delay * 2, 30 * self.scale)


def percentile(values: list[float], share: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def summarize(customers: list[Customer], seconds: float, scale: float) -> dict:
    paid = [c for c in customers if c.outcome != "never"]
    resolved = [c for c in paid if c.answered_at is not None]
    latencies = [(c.answered_at - c.callback_at) * 1000 for c in resolved if c.callback_at]
    # A page polling every 3 s from the order's creation until it sees the answer, in
    # real (unscaled) time.
    interval_cost = [
        math.ceil((c.answered_at - c.created_at) / scale * 1000 / INTERVAL_POLLING_MS)
        for c in resolved
    ]
    return {
        "customers": len(customers),
        "paymentsWithCallback": len(paid),
        "resolved": len(resolved),
        "byStatus": {s: sum(c.final_status == s for c in resolved) for s in sorted(TERMINAL)},
        "requestsPerPayment": round(sum(c.requests for c in resolved) / max(len(resolved), 1), 2),
        "intervalPollingRequestsPerPayment": round(
            sum(interval_cost) / max(len(interval_cost), 1), 2
        ),
        "latencyAfterCallbackMs": {
            "p50": round(percentile(latencies, 0.5), 1),
            "p99": round(percentile(latencies, 0.99), 1),
        },
        "gaveUp": sum(c.gave_up for c in customers),
        "errors": sum(len(c.errors) for c in customers),
        "seconds": round(seconds, 1),
    }


@click.command("simulate")
@click.option("--orders", default=1000, show_default=True, help="customers in the sale")
@click.option("--concurrency", default=1000, show_default=True, help="customers at once")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    help="multiply every delay and timeout (0.01: a 60 s long poll takes 0.6 s)",
)
@click.option("--secret", default=None, help="webhook secret (default: WEBHOOK_SECRET)")
@click.option("--seed", default=None, type=int, help="fix the random outcomes and delays")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def simulate(orders, concurrency, url, time_scale, secret, seed, as_json):
    """Play a flash sale against a running server and summarize what customers saw."""
    secret = secret or current_app.config["WEBHOOK_SECRET"]
    if not secret:
        raise click.UsageError("no webhook secret: set WEBHOOK_SECRET or pass --secret")
    sale = FlashSale(Http(url), secret, scale=time_scale, seed=seed)
    customers = [sale.customer() for _ in range(orders)]
    pool = Pool(concurrency)
    started = time.monotonic()
    for customer in customers:
        pool.spawn(sale.play, customer)
    while not pool.join(timeout=0.5):
        done = sum(c.answered_at is not None or c.gave_up or bool(c.errors) for c in customers)
        filled = int(30 * done / orders)
        click.echo(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{orders}", nl=False, err=True)
    click.echo("", err=True)
    summary = summarize(customers, time.monotonic() - started, time_scale)
    if as_json:
        click.echo(json.dumps(summary))
        return
    for name, value in summary.items():
        click.echo(f"{name:<36} {value}")
    sys.stdout.flush()


def init_app(app) -> None:
    app.cli.add_command(simulate)
