"""The API against its own OpenAPI document, checked by a fuzzer the project did not write.

schemathesis (`st run`) against a live gunicorn server (gevent worker, PostgreSQL, Redis):
every phase (examples, coverage, fuzzing, and stateful runs that follow the document's links
from a created order to its endpoints), every check, a bounded number of examples per
operation and a fixed seed, so a run is repeatable. What a client holds that no document
gives (an order's token, the admin token, the webhook secret) is added by
tests/support/contract_hooks.py.

One check is left out: `ignored_auth`, which expects a wrong credential to get 401 or 403.
A wrong order token answers 404, exactly like an unknown order, so that no one learns which
order ids exist (the document says so); test_no_order_endpoint_answers_without_its_token
checks that rule instead.
"""

import os
import re
import subprocess
import sys

import requests

from app.openapi import full_document
from tests.support.helpers import WEBHOOK_SECRET, order_body

ADMIN_TOKEN = "contract-admin-token"
EXAMPLES_PER_OPERATION = int(os.environ.get("CONTRACT_EXAMPLES", "25"))
SEED = 20261205
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_ENV = {
    "ADMIN_TOKENS": ADMIN_TOKEN,
    # Every route, the development-only one included.
    "DEV_SIMULATE_PROVIDER": 1,
    # A held wait or an open stream ends in a fraction of a second whatever is generated.
    "LONGPOLL_MAX_TIMEOUT_MS": 200,
    "SSE_HEARTBEAT_INTERVAL": 0.2,
    "SSE_MAX_STREAMS_PER_TOKEN": 50,
}


def test_schemathesis_finds_no_failure_of_any_check(live_server):
    server = live_server(**SERVER_ENV)
    command = [
        os.path.join(os.path.dirname(sys.executable), "st"),
        "--config-file",
        os.path.join(ROOT, "tests", "support", "schemathesis.toml"),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "ignored_auth",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--no-color",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "SCHEMATHESIS_HOOKS": "tests.support.contract_hooks",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CONTRACT_ADMIN_TOKEN": ADMIN_TOKEN,
        "CONTRACT_BASE_URL": server.url,
    }
    run = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    report = run.stdout + run.stderr
    summary = re.search(r"Test cases:\s*\n\s*(.+)", report)
    print(f"\nschemathesis, seed {SEED}, {EXAMPLES_PER_OPERATION} examples per operation:")
    print("  " + (summary.group(1) if summary else "no summary"))
    assert run.returncode == 0, report[-20_000:]
    assert summary and re.match(r"\d+ generated, \d+ passed$", summary.group(1)), report[-5_000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", report), f"{phase} did not pass:\n{report[-5_000:]}"
    covered = re.search(r"API Links:\s+(\d+) covered", report)
    assert covered and int(covered.group(1)) >= 3, "the stateful phase followed no links"


ORDER_OPERATIONS = [
    (method, path)
    for path, item in full_document()["paths"].items()
    for method, operation in item.items()
    if isinstance(operation, dict) and {"orderBearer": []} in operation.get("security", [])
]
HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def call(server, method: str, path: str, order_id: str, token: str | None) -> requests.Response:
    url = server.url + path.replace("{order_id}", order_id)
    headers = dict(HANDSHAKE) if path.endswith("/ws") else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = {"outcome": "success"} if method == "post" else None
    return requests.request(method, url, json=body, headers=headers, timeout=10)


def test_no_order_endpoint_answers_without_its_token(live_server):
    """Missing token: 401. Another order's token, or a made-up one: 404, as for an order
    that does not exist; nothing of the order is in the answer."""
    assert len(ORDER_OPERATIONS) == 5, ORDER_OPERATIONS  # the document still marks them
    server = live_server(DEV_SIMULATE_PROVIDER=1, LONGPOLL_MAX_TIMEOUT_MS=200)
    mine, other = (
        requests.post(f"{server.url}/api/orders", json=order_body(), timeout=10).json()
        for _ in range(2)
    )
    unknown_id = "00000000-0000-4000-8000-000000000000"
    for method, path in ORDER_OPERATIONS:
        label = f"{method.upper()} {path}"
        assert call(server, method, path, mine["orderId"], None).status_code == 401, label
        for wrong in (other["accessToken"], "made-up-token"):
            answer = call(server, method, path, mine["orderId"], wrong)
            assert answer.status_code == 404, label
            assert mine["orderNumber"] not in answer.text, label
        unknown = call(server, method, path, unknown_id, mine["accessToken"])
        assert unknown.status_code == 404, label
    # The order is untouched: the simulate calls above were all refused.
    order = requests.get(
        f"{server.url}/api/orders/{mine['orderId']}",
        headers={"Authorization": f"Bearer {mine['accessToken']}"},
        timeout=10,
    ).json()
    assert (order["paymentStatus"], order["version"]) == ("processing", 1)
