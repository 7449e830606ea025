"""Routes served as plain WSGI in front of Flask, for the requests a worker serves by the
thousand: held waits and the provider's webhook.

Flask's request context, routing, session, limiter and hooks cost more per request than
those routes' own work. Served here they answer with the same bytes and headers as Flask
(tests compare the two). Every other request goes on to Flask, and so does a cross-origin
one when CORS is on, so that flask-cors answers it.
"""

from __future__ import annotations

import logging
import re

from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from app.errors import DATABASE_DOWN, ApiError
from app.logs import first_line

log = logging.getLogger(__name__)

SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]


class PlainRoute:
    """WSGI middleware serving `method` on paths matching `path`; the rest goes to
    `next_app`. Subclasses implement `serve`, inside an app context, and raise the app's
    errors as the Flask route would."""

    path: re.Pattern
    method: str

    def __init__(self, app, next_app):
        self.app = app
        self.next_app = next_app

    def __call__(self, environ, start_response):
        match = self.path.fullmatch(environ.get("PATH_INFO", ""))
        if (
            match is None
            or environ["REQUEST_METHOD"] != self.method
            or (self.app.config["CORS_ORIGINS"] and "HTTP_ORIGIN" in environ)
        ):
            return self.next_app(environ, start_response)
        with self.app.app_context():
            try:
                response = self.serve(match, environ, start_response)
            except Exception as exc:
                what = f"{self.method} {environ.get('PATH_INFO')}"
                return self.error(start_response, *error_for(exc, what))
        if response is None:
            # Taken over: something else answers on a socket of its own. gunicorn ends a
            # request that raises StopIteration by closing its socket, writing nothing.
            raise StopIteration
        return response

    def serve(self, match: re.Match, environ, start_response):
        """The WSGI response, or None when the request was handed over (see __call__)."""
        raise NotImplementedError

    def json(self, start_response, value, status: int = 200) -> list[bytes]:
        body = json_bytes(self.app, value)
        start_response(status_line(status), json_headers(body))
        return [body]

    def error(self, start_response, status: int, message: str, retry_after=None) -> list[bytes]:
        body = error_bytes(self.app, message)
        start_response(status_line(status), error_headers(body, retry_after))
        return [body]


def error_for(exc: Exception, what: str) -> tuple[int, str, int | None]:
    """(status, message, Retry-After) of the answer to `exc`, raised serving `what`: what
    the Flask app's error handlers answer for the same exception."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.retry_after
    if isinstance(exc, HTTPException):  # werkzeug's own, such as 413 for a large body
        return exc.code or 500, exc.description or exc.name, None
    if isinstance(exc, DATABASE_DOWN):
        log.error("database unavailable: %s", first_line(exc))
        return 503, "database unavailable, retry shortly", None
    log.error("%s failed", what, exc_info=exc)
    return 500, "Internal Server Error", None


def status_line(status: int) -> str:
    """As werkzeug writes it: "404 NOT FOUND"."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


def json_bytes(app, value) -> bytes:
    """As Flask's jsonify writes it (outside debug mode)."""
    return app.json.dumps(value, separators=(",", ":")).encode() + b"\n"


def json_headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *SECURITY_HEADERS,
    ]


def error_bytes(app, message: str) -> bytes:
    return json_bytes(app, {"success": False, "error": message})


def error_headers(body: bytes, retry_after=None) -> list[tuple[str, str]]:
    headers = json_headers(body)
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    return headers


def closing_response(http: str, status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """A whole HTTP response, for a socket the server has let go of: it closes after it."""
    head = [f"{http} {status_line(status)}"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
