"""What every request passes through: body size and type, the headers of the response
policy (app/responses.py) on Flask's answers, and the client address behind proxies."""

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge
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


class BodyTooLarge(RequestEntityTooLarge):
    """413: the body is over `limit` bytes. `read` is what was read of it (nothing when its
    Content-Length said so, else its first limit + 1 bytes), for an audit trail."""

    def __init__(self, limit: int, read: bytes, announced: int | None = None):
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit
        self.read = read
        self.announced = announced  # the Content-Length, when the client gave one


def read_body(environ, limit: int | None = None) -> bytes:
    """The request body, counted against `limit` (MAX_CONTENT_LENGTH by default) as it
    streams: a body over the limit raises BodyTooLarge (413) once limit + 1 bytes of it were
    read, or before any is read when its Content-Length says so.

    A chunked body comes without a Content-Length: the server de-chunks it and ends the
    stream where the body ends (gunicorn's wsgi.input, flagged wsgi.input_terminated).
    werkzeug's get_input_stream stops such a stream quietly at the limit, so an oversized
    body arrived cut short instead of refused.
    """
    if limit is None:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = get_content_length(environ)  # None when chunked or not given
    if length is not None and length > limit:
        raise BodyTooLarge(limit, b"", announced=length)
    if length is None and not environ.get("wsgi.input_terminated"):
        # No length, and no server to end the stream: reading could wait forever (werkzeug
        # reads nothing here either).
        return b""
    wanted = limit + 1 if length is None else length
    stream = environ["wsgi.input"]
    parts, size = [], 0
    while size < wanted:
        part = stream.read(wanted - size)  # a WSGI stream may return less than asked
        if not part:
            break  # the end of the body (or the client went away: the body is cut short)
        parts.append(part)
        size += len(part)
    body = b"".join(parts)
    if size > limit:
        raise BodyTooLarge(limit, body)
    return body


def behind_proxies(app, wsgi_app):
    """Behind nginx the peer is the proxy: the client is in X-Forwarded-For, and the
    per-address limits must count clients, not the proxy. Outermost of the WSGI chain, so
    every route sees the client's address."""
    proxies = app.config["PROXY_FIX_X_FOR"]
    if not proxies:
        return wsgi_app
    return ProxyFix(wsgi_app, x_for=proxies, x_proto=proxies)
