"""What every request and response passes through: body size and type, security headers,
cross-origin access for configured origins only, and the client address behind proxies."""

from flask import request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from app.errors import ApiError

# Pages load only their own scripts, styles and images, and talk only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


JSON_BODY_REQUIRED = "request body must be JSON (Content-Type: application/json)"


class UnsupportedMediaType(ApiError):
    status = 415


def init_app(app) -> None:
    # Flask answers a larger body with 413 (JSON through the error handlers).
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    app.before_request(require_json_bodies)
    app.after_request(add_security_headers)
    origins = app.config["CORS_ORIGINS"]
    if origins:
        CORS(
            app,
            resources={r"/api/*": {"origins": origins}},
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Retry-After"],
            max_age=600,
        )


def trust_proxies(app) -> None:
    """Behind nginx the peer is the proxy: the client is in X-Forwarded-For, and the
    per-address limits must count clients, not the proxy. Outermost of the WSGI wrappers,
    so every route sees the client's address."""
    proxies = app.config["PROXY_FIX_X_FOR"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)


def require_json_bodies():
    """An API request that carries a body must say it is JSON."""
    if (
        request.path.startswith("/api/")
        and request.method in ("POST", "PUT", "PATCH")
        and (request.content_length or request.headers.get("Transfer-Encoding"))
        and request.mimetype != "application/json"
    ):
        raise UnsupportedMediaType(JSON_BODY_REQUIRED)


def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # Order pages carry their token in the URL fragment: never leak the URL onwards.
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response
