"""Orders: creation, reading with the order token, the long-poll wait, and the order's
events over SSE and WebSocket."""

from flask import Blueprint

bp = Blueprint("orders", __name__, url_prefix="/api/orders")
# The WebSocket route apart: its before/teardown hooks open and release the order's stream.
socket_bp = Blueprint("order_socket", __name__, url_prefix="/api/orders")


def init_app(app) -> None:
    """Register the routes, and the hub's database poll for order channels."""
    from . import events, reads, routes  # noqa: F401  (routes attach to bp)

    app.register_blueprint(bp)
    app.register_blueprint(socket_bp)

    def poll(order_ids: list[str]):
        with app.app_context():
            return reads.latest_versions(order_ids)

    app.extensions["hub"].add_poll_source(events.CHANNEL_PREFIX, poll, events.CHANNEL_SUFFIX)
