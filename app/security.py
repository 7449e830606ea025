"""What every request passes through: body size and type, the headers of the response
policy (app/responses.py) on Flask's answers, and the client address behind proxies."""

from flask import request
from werkzeug.http import parse_options_header
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import get_content_length

from app.errors import UnsupportedMediaType
from app.responses import Cors, finish_flask_response

JSON_BODY_REQUIRED = "request body must be JSON (Content-Type: application/json)"
_WITH_BODY = ("POST", "PUT", "PATCH")


def init_app(app, cors: Cors) -> None:
    # Flask answers a larger body with 413 (JSON through the error handlers).
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    app.before_request(lambda: require_json_body(request.environ))
    app.after_request(lambda response: finish_flask_response(response, cors, request.environ))


def require_json_body(environ) -> None:
    """An API request that carries a body must say it is JSON (415)."""
    if (
        environ.get("PATH_INFO", "").startswith("/api/")
        and environ["REQUEST_METHOD"] in _WITH_BODY
        and (get_content_length(environ) or environ.get("HTTP_TRANSFER_ENCODING"))
        and parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower() != "application/json"
    ):
        raise UnsupportedMediaType(JSON_BODY_REQUIRED)


def behind_proxies(app, wsgi_app):
    """Behind nginx the peer is the proxy: the client is in X-Forwarded-For, and the
    per-address limits must count clients, not the proxy. Outermost of the WSGI chain, so
    every route sees the client's address."""
    proxies = app.config["PROXY_FIX_X_FOR"]
    if not proxies:
        return wsgi_app
    return ProxyFix(wsgi_app, x_for=proxies, x_proto=proxies)
