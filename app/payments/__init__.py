"""Payments: the provider's signed webhook, mapped onto the order state machine."""

from flask import Blueprint

bp = Blueprint("payments", __name__, url_prefix="/api/payhero")


def init_app(app) -> None:
    from . import models, routes  # noqa: F401  (routes attach to bp; models to the metadata)

    app.register_blueprint(bp)
    # The webhook is served ahead of Flask: see routes.CallbackRoute.
    app.wsgi_app = routes.CallbackRoute(app, app.wsgi_app)
