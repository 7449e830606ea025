"""Domain errors and their JSON responses: `{"success": false, "error": "..."}`."""

import logging

from flask import jsonify
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from app.logs import first_line

log = logging.getLogger(__name__)


# What the database raises when it is down, unreachable or out of connections.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeoutError)


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After


class ValidationError(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class TooManyRequests(ApiError):
    status = 429


class ServiceUnavailable(ApiError):
    status = 503


def error_response(message: str, status: int):
    return jsonify(success=False, error=message), status


def register_error_handlers(app) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(err: ApiError):
        response, status = error_response(err.message, err.status)
        if err.retry_after is not None:
            response.headers["Retry-After"] = str(err.retry_after)
        return response, status

    @app.errorhandler(HTTPException)
    def handle_http_exception(err: HTTPException):
        return error_response(err.description or err.name, err.code or 500)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    def handle_database_down(err):
        # The database is the truth: without it we cannot answer, but the client may retry.
        log.error("database unavailable: %s", first_line(err))
        return error_response("database unavailable, retry shortly", 503)
