"""Browser pages: checkout, the order status page, the admin dashboard.

The pages are static HTML and plain JavaScript (no build step); what the scripts need from the
configuration is handed over in data- attributes, so no script is inline.
"""

from flask import Blueprint

bp = Blueprint("pages", __name__)


def init_app(app) -> None:
    from . import routes  # noqa: F401  (routes attach to bp)

    app.register_blueprint(bp)
    if app.config["DEV_SIMULATE_PROVIDER"]:
        from .simulate import bp as simulate_bp

        app.register_blueprint(simulate_bp)
        app.logger.warning(
            "DEV_SIMULATE_PROVIDER is on: pages can fake provider callbacks (development only)"
        )
