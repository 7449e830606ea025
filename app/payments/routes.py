"""The provider's webhook endpoint."""

import json

from flask import current_app, jsonify, request

from app.errors import Unauthorized, ValidationError

from . import bp, services, signature
from .schemas import parse_callback


@bp.post("/callback")
def callback():
    body = request.get_data(cache=False)
    if not signature.is_valid(
        body, request.headers.get("X-Webhook-Signature"), current_app.config["WEBHOOK_SECRET"]
    ):
        raise Unauthorized("missing or invalid webhook signature")
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValidationError("body is not valid JSON") from None
    return jsonify(services.apply_callback(parse_callback(payload)).to_json())
