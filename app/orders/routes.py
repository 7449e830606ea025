"""HTTP routes of the orders feature: parse, call one service, serialize."""

from flask import current_app, jsonify, request

from app.ratelimit import limiter, order_creation_limit, order_creation_unlimited
from app.realtime import sse
from app.validation import parse_json

from . import bp, services
from .access import token_from_request
from .schemas import parse_new_order, parse_wait


@bp.post("")
@limiter.limit(order_creation_limit, exempt_when=order_creation_unlimited)
def create():
    order, token = services.create_order(parse_new_order(parse_json(request.get_data())))
    return jsonify({**order.to_json(), "accessToken": token}), 201


@bp.get("/<order_id>")
def show(order_id: str):
    return jsonify(services.authorize(order_id, token_from_request(request)).to_json())


@bp.get("/<order_id>/wait")
def wait(order_id: str):
    cfg = current_app.config
    params = parse_wait(
        request.args,
        default_timeout_ms=cfg["LONGPOLL_DEFAULT_TIMEOUT_MS"],
        max_timeout_ms=cfg["LONGPOLL_MAX_TIMEOUT_MS"],
    )
    answer = services.wait_for_update(
        order_id,
        token_from_request(request),
        params.since,
        params.timeout_ms,
        client=request.remote_addr or "-",
    )
    response = jsonify(answer.body)
    response.call_on_close(answer.written)
    return response


@bp.get("/<order_id>/events")
def events(order_id: str):
    stream = services.order_event_stream(
        order_id,
        token_from_request(request),
        sse.last_event_id(request),
        heartbeat=current_app.config["SSE_HEARTBEAT_INTERVAL"],
    )
    if stream is None:
        return "", 204  # settled, and the client has it all: EventSource stops reconnecting
    watch, frames = stream
    return sse.serve("sse:order", order_id, frames, release=watch.close)
