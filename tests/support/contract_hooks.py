"""Schemathesis hooks for the contract test: what a real client holds that no schema gives.

Loaded by `st run` through SCHEMATHESIS_HOOKS. A generated request keeps everything the
fuzzer chose, except:
- a webhook body is signed as the provider signs it (WEBHOOK_SECRET), when the generated
  signature header is well formed: a malformed or missing one is left to be refused;
- a request to an order the run created carries that order's token (links give the id);
- a valid (positive) request to an order endpoint with a made-up id asks for a real order,
  and a valid callback names a real order, so that they reach past the 401/404;
- admin requests carry the admin token (CONTRACT_ADMIN_TOKEN).
"""

import json
import os
import re

import requests
import schemathesis

from app.payments.signature import sign

SECRET = os.environ["WEBHOOK_SECRET"]
ADMIN_TOKEN = os.environ["CONTRACT_ADMIN_TOKEN"]
BASE_URL = os.environ["CONTRACT_BASE_URL"]
WELL_FORMED_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")
ADMIN_PATHS = ("/api/admin/", "/api/services/", "/api/realtime/")
# Order ids the run created -> their tokens.
TOKENS: dict[str, str] = {}


def _real_order() -> dict:
    """One order of the run's own, created on first use."""
    if "order" not in REAL:
        body = {
            "amount": 300,
            "customer": {"email": "fuzz@example.com", "firstName": "F", "lastName": "Z"},
        }
        url = BASE_URL + "/api/orders"
        created = requests.post(url, json=body, timeout=10).json()
        TOKENS[created["orderId"]] = created["accessToken"]
        REAL["order"] = created
    return REAL["order"]


REAL: dict[str, dict] = {}


def _positive(case) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def after_call(context, case, response):
    if case.operation.path == "/api/orders" and response.status_code == 201:
        created = response.json()
        TOKENS[created["orderId"]] = created["accessToken"]


@schemathesis.hook
def before_call(context, case, **kwargs):
    path = case.operation.path
    headers = case.headers = dict(case.headers or {})
    if path.startswith(ADMIN_PATHS):
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    order_id = (case.path_parameters or {}).get("order_id")
    if order_id is not None and order_id not in TOKENS and _positive(case):
        order_id = case.path_parameters["order_id"] = _real_order()["orderId"]
    token = TOKENS.get(order_id)
    if token is not None and not path.endswith("/ws"):
        headers["Authorization"] = f"Bearer {token}"
    if path == "/api/payhero/callback":
        if _positive(case) and isinstance(case.body, dict):
            case.body["response"]["ExternalReference"] = _real_order()["orderNumber"]
        _sign(case, headers)


def _sign(case, headers: dict) -> None:
    """Sign the body as requests will send it (its `json=`: json.dumps, UTF-8)."""
    name = next((n for n in headers if n.lower() == "x-webhook-signature"), None)
    if name is None or not WELL_FORMED_SIGNATURE.fullmatch(str(headers[name])):
        return
    if case.media_type != "application/json":
        return
    try:
        body = json.dumps(case.body, allow_nan=False).encode()
    except (TypeError, ValueError):
        return  # not sendable as JSON: requests refuses it too
    headers[name] = sign(body, SECRET)
