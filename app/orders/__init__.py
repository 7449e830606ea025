"""Orders: creation, reading with the order token, the long-poll wait, and the order's
events over SSE and WebSocket."""

from flask import Blueprint
from gevent.lock import BoundedSemaphore, DummySemaphore

from app.realtime.turns import TurnQueue

bp = Blueprint("orders", __name__, url_prefix="/api/orders")
# The WebSocket route apart: its before/teardown hooks open and release the order's stream.
socket_bp = Blueprint("order_socket", __name__, url_prefix="/api/orders")


def init_app(app) -> None:
    """Register the routes, and the hub's database poll for order channels."""
    from . import events, routes, services, wait_route  # noqa: F401  (routes attach to bp)

    app.register_blueprint(bp)
    app.register_blueprint(socket_bp)
    at_once = app.config["WAITS_OPENING_AT_ONCE"]
    openings = BoundedSemaphore(at_once) if at_once else DummySemaphore()
    app.extensions["wait_openings"] = openings
    # Under gunicorn, a wait that finds no turn free queues by its socket (app/realtime/turns.py).
    # A draining worker answers what queued before it exits, as it does its parked waits.
    app.extensions["wait_queue"] = queue = TurnQueue(openings)
    hub = app.extensions["hub"]
    app.extensions["drained"].append(lambda timeout: hub.closing and queue.wait_empty(timeout))
    # Held waits are served ahead of Flask: see wait_route.
    app.wsgi_app = wait_route.WaitRoute(app, app.wsgi_app)

    def poll(order_ids: list[str]):
        with app.app_context():
            return services.latest_versions(order_ids)

    app.extensions["hub"].add_poll_source(events.CHANNEL_PREFIX, poll)
