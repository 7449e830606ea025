"""Orders: creation, reading with the order token, the long-poll wait, and the order's
events over SSE and WebSocket."""

from flask import Blueprint
from gevent.lock import BoundedSemaphore, DummySemaphore

bp = Blueprint("orders", __name__, url_prefix="/api/orders")
# The WebSocket route apart: its before/teardown hooks open and release the order's stream.
socket_bp = Blueprint("order_socket", __name__, url_prefix="/api/orders")


def init_app(app) -> None:
    """Register the routes, and the hub's database poll for order channels."""
    from . import events, routes, services, wait_route  # noqa: F401  (routes attach to bp)

    app.register_blueprint(bp)
    app.register_blueprint(socket_bp)
    at_once = app.config["WAITS_OPENING_AT_ONCE"]
    app.extensions["wait_openings"] = BoundedSemaphore(at_once) if at_once else DummySemaphore()
    # Held waits are served ahead of Flask: see wait_route.
    app.wsgi_app = wait_route.WaitRoute(app, app.wsgi_app)

    def poll(order_ids: list[str]):
        with app.app_context():
            return services.latest_versions(order_ids)

    app.extensions["hub"].add_poll_source(events.CHANNEL_PREFIX, poll)
