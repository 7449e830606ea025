"""Small validators shared by the features: each raises ValidationError naming the field."""

import json
import re
from decimal import Decimal, InvalidOperation

from app.errors import ValidationError

_INTEGER = re.compile(r"-?\d{1,12}")
# NUL and other control characters, and lone surrogates: no database stores them as text.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
INT32 = (-(2**31), 2**31 - 1)


def parse_json(raw: bytes):
    """A request body as JSON; anything unreadable (even nested past recursion) is a 400."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("body is not valid JSON") from None


def json_object(payload) -> dict:
    if not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object")
    return payload


def required(obj: dict, field: str, label: str | None = None):
    if obj.get(field) is None:
        raise ValidationError(f"{label or field} is required")
    return obj[field]


def text(value, label: str, *, max_len: int, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{label} must be a non-empty string")
    value = value.strip()
    if _UNSTORABLE.search(value):
        raise ValidationError(f"{label} contains characters that are not allowed")
    if len(value) > max_len:
        raise ValidationError(f"{label} must be at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise ValidationError(f"{label} is not valid")
    return value


def integer(value, label: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    # bool is an int subclass in Python; true is not a ticket count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{label} must be an integer")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{label} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValidationError(f"{label} must be at most {maximum}")
    return value


def integer_param(raw: str | None, label: str) -> int | None:
    """A query-string integer; None when absent."""
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw.strip()):
        raise ValidationError(f"{label} must be an integer")
    return int(raw)


def money(value, label: str, *, maximum: Decimal) -> Decimal:
    """A positive amount with at most two decimal places."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{label} must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"{label} must be a number") from None
    if not amount.is_finite() or amount <= 0:
        raise ValidationError(f"{label} must be greater than 0")
    if amount > maximum:
        raise ValidationError(f"{label} must be at most {maximum}")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValidationError(f"{label} must have at most 2 decimal places")
    return amount.quantize(Decimal("0.01"))
