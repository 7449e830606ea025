"""The provider's webhook endpoint."""

import json

from flask import current_app, jsonify, request

from app.errors import NotFound, Unauthorized, ValidationError
from app.orders.signals import callback_received

from . import bp, services, signature
from .schemas import parse_callback


@bp.post("/callback")
def callback():
    app = current_app._get_current_object()
    try:
        outcome = _apply(request)
    except (Unauthorized, ValidationError, NotFound):
        callback_received.send(app, outcome="rejected")
        raise
    callback_received.send(app, outcome="duplicate" if outcome.duplicate else "accepted")
    return jsonify(outcome.to_json())


def _apply(request) -> services.Outcome:
    body = request.get_data(cache=False)
    if not signature.is_valid(
        body, request.headers.get("X-Webhook-Signature"), current_app.config["WEBHOOK_SECRET"]
    ):
        raise Unauthorized("missing or invalid webhook signature")
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValidationError("body is not valid JSON") from None
    return services.apply_callback(parse_callback(payload))
