"""The errors requests end with; app/responses.py says how each is answered."""

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# What the database raises when it is down, unreachable or out of connections.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeoutError)


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After


class ValidationError(ApiError):
    """Bad input. `fields` lists every (field, message) found wrong, so a form can show them
    all; `message` says them in one line."""

    status = 400

    def __init__(self, message: str, *, fields: list[tuple[str, str]] = ()):
        super().__init__(message)
        self.fields = list(fields)

    @classmethod
    def of_fields(cls, fields: list[tuple[str, str]]) -> "ValidationError":
        return cls("; ".join(f"{field} {message}" for field, message in fields), fields=fields)


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class UnsupportedMediaType(ApiError):
    status = 415


class TooManyRequests(ApiError):
    status = 429


class ServiceUnavailable(ApiError):
    status = 503
