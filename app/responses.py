"""The one response policy: how every answer is encoded, whoever serves it.

Flask's handlers (through the JSON provider, the error handlers and `finish_flask_response`)
and the plain routes (app/plain_wsgi.py, and held requests answered on their own socket)
build their answers here: status lines, JSON bytes, security headers, cross-origin headers,
the mapping of errors to statuses, `Retry-After` and `Allow`.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterable
from typing import Literal

from flask.json.provider import DefaultJSONProvider
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from app.errors import DATABASE_DOWN, ApiError, ValidationError
from app.logs import first_line

log = logging.getLogger(__name__)

Headers = tuple[tuple[str, str], ...]

SECURITY_HEADERS: Headers = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
# Pages load only their own scripts, styles and images, and talk only to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS: Headers = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
)
_CORS_ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"
_CORS_MAX_AGE = "600"


class Response:
    """A whole answer: status, headers and body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Iterable[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = list(headers)
        self.body = body

    def start(self, start_response) -> list[bytes]:
        """Send it through WSGI."""
        start_response(status_line(self.status), self.headers)
        return [self.body]

    def closing_bytes(self, http: str) -> bytes:
        """The whole HTTP response, for a socket the server has let go of: the connection
        closes after it."""
        head = [f"{http} {status_line(self.status)}"]
        head += [f"{name}: {value}" for name, value in self.headers]
        head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def status_line(status: int) -> str:
    """As werkzeug writes it: "404 NOT FOUND"."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


def json_text(value) -> str:
    """Compact, keys sorted, ASCII: what every JSON answer is."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_default)


def json_bytes(value) -> bytes:
    return (json_text(value) + "\n").encode()


def json_response(value, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json_bytes(value)
    return Response(
        status,
        (
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS,
            *headers,
        ),
        body,
    )


class FieldError(BaseModel):
    field: str = Field(description="The field's path in the body or query: customer.email")
    message: str


class ErrorBody(BaseModel):
    """Every error the API answers."""

    success: Literal[False]
    error: str = Field(min_length=1)
    errors: list[FieldError] | None = Field(
        None, description="Bad input: every field that is wrong, each with its message."
    )


# Seconds a client waits before retrying a 429 or 503 that names no time of its own.
DEFAULT_RETRY_AFTER = "1"


def error_response(exc: BaseException, what: str, headers: Headers = ()) -> Response:
    """The answer to `exc`, raised serving `what`: `{"success": false, "error": "..."}`, with
    `errors: [{field, message}]` when it is bad input. Every 429 and 503 says Retry-After."""
    status, message, extra = _error(exc, what)
    body = {"success": False, "error": message}
    if isinstance(exc, ValidationError) and exc.fields:
        body["errors"] = [{"field": field, "message": text} for field, text in exc.fields]
    if status in (429, 503) and not any(k.lower() == "retry-after" for k, _ in extra):
        extra.append(("Retry-After", DEFAULT_RETRY_AFTER))
    return json_response(body, status, (*extra, *headers))


def _error(exc: BaseException, what: str) -> tuple[int, str, list[tuple[str, str]]]:
    if isinstance(exc, ApiError):
        retry = [] if exc.retry_after is None else [("Retry-After", str(exc.retry_after))]
        return exc.status, exc.message, retry
    if isinstance(exc, HTTPException):  # werkzeug's own: 404, 405 (with Allow), 413
        kept = [(k, v) for k, v in exc.get_headers() if k.lower() in ("allow", "retry-after")]
        return exc.code or 500, exc.description or exc.name, kept
    if isinstance(exc, DATABASE_DOWN):
        # The database is the truth: without it we cannot answer, but the client may retry.
        log.error("database unavailable: %s", first_line(exc))
        return 503, "database unavailable, retry shortly", []
    if isinstance(exc, DBAPIError):
        # The driver's message goes on to quote rows (a unique violation's DETAIL: a
        # customer's values). Its first line and where it was raised tell what failed.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("%s failed: %s\nTraceback:\n%s", what, first_line(exc), frames.rstrip())
    else:
        log.error("%s failed", what, exc_info=exc)
    return 500, "Internal Server Error", []


# What Flask encodes besides JSON's own types (dates, decimals, UUIDs, dataclasses).
_default = DefaultJSONProvider.default


class JsonProvider(DefaultJSONProvider):
    """Flask's jsonify and app.json, encoding as json_bytes does."""

    def dumps(self, obj, **_options) -> str:
        return json_text(obj)


class Cors:
    """Cross-origin access for the configured origins only, on every API path."""

    def __init__(self, origins: list[str]):
        self.origins = frozenset(origins)

    def headers(self, environ) -> Headers:
        """What an answer to this request carries for its origin (nothing for others)."""
        origin = environ.get("HTTP_ORIGIN")
        if not self.origins or origin not in self.origins:
            return ()
        if not environ.get("PATH_INFO", "").startswith("/api/"):
            return ()
        headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.is_preflight(environ):
            headers += [
                ("Access-Control-Allow-Methods", environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"]),
                ("Access-Control-Allow-Headers", _CORS_ALLOWED_HEADERS),
                ("Access-Control-Max-Age", _CORS_MAX_AGE),
            ]
        else:
            headers.append(("Access-Control-Expose-Headers", "Retry-After"))
        return tuple(headers)

    @staticmethod
    def is_preflight(environ) -> bool:
        return environ["REQUEST_METHOD"] == "OPTIONS" and bool(
            environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        )


def finish_flask_response(response, cors: Cors, environ):
    """Flask's after_request: the headers every answer carries. An answer without a body
    has no content type (Flask's default, text/html, makes SSE clients refuse a 204)."""
    if response.status_code in (204, 304):
        response.headers.pop("Content-Type", None)
    extra = list(SECURITY_HEADERS) + list(cors.headers(environ))
    if response.mimetype == "text/html":
        extra += PAGE_HEADERS
    for name, value in extra:
        response.headers.setdefault(name, value)
    return response


def register_error_handlers(app) -> None:
    """Flask's errors answered by the one response policy (app/responses.py)."""
    from flask import Response, request

    def answer(err):
        policy = error_response(err, f"{request.method} {request.path}")
        return Response(policy.body, policy.status, policy.headers)

    for kind in (ApiError, HTTPException, *DATABASE_DOWN):
        app.register_error_handler(kind, answer)
