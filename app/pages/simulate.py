"""Development only: play the payment provider from the order page.

Registered when DEV_SIMULATE_PROVIDER is set. It signs a PayHero-shaped callback with the
app's own WEBHOOK_SECRET and posts it to the app's own webhook, so the whole real path runs.
"""

import json
import urllib.error
import urllib.request
from typing import Literal

from flask import Blueprint, current_app, jsonify, request

from app.orders import services as orders
from app.orders.access import token_from_request
from app.payments.signature import sign
from app.security import read_body
from app.validation import Model, parse_json, validated

# Its own blueprint: registered only on apps that have the development flag.
bp = Blueprint("simulate", __name__)

RESULT_CODES = {"success": 0, "cancel": 1032, "fail": 2001}


class SimulateRequest(Model):
    outcome: Literal["success", "cancel", "fail"]


@bp.post("/api/dev/orders/<order_id>/simulate")
def simulate(order_id: str):
    order = orders.authorize(order_id, token_from_request(request)).to_json()
    outcome = validated(SimulateRequest, parse_json(read_body(request.environ))).outcome
    body = json.dumps(
        {
            "status": True,
            "response": {
                "Amount": order["totalAmount"],
                "CheckoutRequestID": "ws_CO_simulated",
                "ExternalReference": order["orderNumber"],
                "MpesaReceiptNumber": "SIM" + order["orderId"][:7].upper(),
                "ResultCode": RESULT_CODES[outcome],
                "ResultDesc": f"simulated {outcome}",
                "Status": "Success" if outcome == "success" else "Failed",
            },
        }
    ).encode()
    callback = urllib.request.Request(
        request.host_url + "api/payhero/callback",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Webhook-Signature": sign(body, current_app.config["WEBHOOK_SECRET"]),
        },
    )
    try:
        with urllib.request.urlopen(callback, timeout=10) as answer:
            return jsonify(json.load(answer)), answer.status
    except urllib.error.HTTPError as error:
        return jsonify(json.load(error)), error.code
