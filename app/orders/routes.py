"""HTTP and WebSocket routes of the orders feature: parse, call one service, serialize.

The wait is a plain route (app/plain_wsgi.py): it returns the `Wait`, which the long-poll
transport holds and answers."""

import json

from flask import current_app, g, jsonify, request

from app import validation
from app.plain_wsgi import plain_route, query_args
from app.ratelimit import limiter, order_creation_limit, order_creation_unlimited
from app.realtime import sse, websocket
from app.security import read_body
from app.validation import parse_json

from . import bp, services, socket_bp
from .access import bearer_token, token_from_request
from .schemas import parse_new_order, parse_wait
from .updates import GOING_AWAY, IDLE, order_updates, reconnect_delay_ms
from .wait import Wait


@bp.post("")
@limiter.limit(order_creation_limit, exempt_when=order_creation_unlimited)
def create():
    order, token = services.create_order(parse_new_order(parse_json(read_body(request.environ))))
    return jsonify({**order.to_json(), "accessToken": token}), 201


@bp.get("/<order_id>")
def show(order_id: str):
    return jsonify(services.authorize(order_id, token_from_request(request)).to_json())


@plain_route("GET", "/api/orders/{order_id}/wait")
def wait(environ, order_id: str) -> Wait:
    cfg = current_app.config
    args = query_args(environ)
    timeout_ms, since = parse_wait(
        args,
        default_timeout_ms=cfg["LONGPOLL_DEFAULT_TIMEOUT_MS"],
        max_timeout_ms=cfg["LONGPOLL_MAX_TIMEOUT_MS"],
    )
    token = bearer_token(environ.get("HTTP_AUTHORIZATION", "")) or args.get("token") or None
    client = environ.get("REMOTE_ADDR") or "-"
    return Wait(order_id, token, since, timeout_ms, client)


@bp.get("/<order_id>/events")
def events(order_id: str):
    stream = order_updates(
        order_id,
        token_from_request(request),
        lambda: sse.last_event_id(request),
        heartbeat=current_app.config["SSE_HEARTBEAT_INTERVAL"],
    )
    if stream is None:
        return "", 204  # settled, and the client has it all: EventSource stops reconnecting
    watch, following = stream

    def frames(connection):
        for update in following(connection):
            if update == IDLE:
                yield sse.HEARTBEAT
            elif update == GOING_AWAY:
                # The browser reconnects elsewhere with its Last-Event-ID, after this.
                yield sse.retry(reconnect_delay_ms())
                return
            else:
                yield sse.event(update, name="order_status", event_id=update["version"])

    return sse.serve("sse:order", order_id, frames, release=watch.close)


# The WebSocket route is refused before the upgrade (401/404, JSON) when the token does not
# open the order: the stream is opened in before_request, ahead of flask-sock's handshake.
@socket_bp.before_request
def open_order_socket():
    g.order_updates = order_updates(
        request.view_args["order_id"],
        token_from_request(request),
        _socket_request_last_id,
        heartbeat=current_app.config["SSE_HEARTBEAT_INTERVAL"],
    )


def _socket_request_last_id() -> int | None:
    """Once the token opened the order: the handshake's headers, then `?lastEventId=`."""
    websocket.check_handshake(request.headers)
    return validation.event_id(request.args.get("lastEventId"), "lastEventId")


@socket_bp.teardown_request
def release_order_socket(_exc):
    stream = g.pop("order_updates", None)
    if stream is not None:
        stream[0].close()  # the watch, also when the handshake failed


@websocket.sock.route("/<order_id>/ws", bp=socket_bp)
def socket(ws, order_id: str):
    stream = g.order_updates
    if stream is None:
        ws.close(websocket.NORMAL_CLOSURE, "order settled")  # the client has it all
        return
    _, updates = stream
    # Drawn here: the messages are sent from a greenlet of their own, outside the app.
    going_away = f"going away; retry in {reconnect_delay_ms()} ms"

    def messages(connection):
        for update in updates(connection):
            if update == GOING_AWAY:
                yield websocket.Close(websocket.GOING_AWAY, going_away)
            elif update != IDLE:  # keepalive is the socket's own ping
                payload = {"type": "order_status", "payload": update, "id": update["version"]}
                yield json.dumps(payload, separators=(",", ":"))
        yield websocket.Close(websocket.NORMAL_CLOSURE, "order settled")

    websocket.serve(ws, "ws", order_id, messages)
