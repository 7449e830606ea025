"""The provider's webhook endpoint."""

import hashlib

from flask import current_app, jsonify, request

from app.errors import DATABASE_DOWN, NotFound, Unauthorized, ValidationError
from app.orders.signals import callback_received
from app.validation import parse_json

from . import bp, services, signature
from .schemas import parse_callback


@bp.post("/callback")
def callback():
    app = current_app._get_current_object()
    body = request.get_data(cache=False)
    receipt = services.Receipt(hashlib.sha256(body).hexdigest(), request.remote_addr)
    # Counted before the order changes, so it is counted before the change is announced.
    callback_received.send(app, outcome="received")
    try:
        outcome = _apply(body, receipt)
    except (Unauthorized, ValidationError, NotFound):
        callback_received.send(app, outcome="rejected")
        raise
    except DATABASE_DOWN:
        services.note_outcome("unavailable", "database unavailable")
        raise
    if outcome.duplicate:
        callback_received.send(app, outcome="duplicate")
    return jsonify(outcome.to_json())


def _apply(body: bytes, receipt: services.Receipt) -> services.Outcome:
    if not signature.is_valid(
        body, request.headers.get("X-Webhook-Signature"), current_app.config["WEBHOOK_SECRET"]
    ):
        services.record_rejection(receipt, "missing or invalid signature")
        raise Unauthorized("missing or invalid webhook signature")
    try:
        callback = parse_callback(parse_json(body))
    except ValidationError as error:
        services.record_rejection(receipt, error.message)
        raise
    return services.apply_callback(callback, receipt)
