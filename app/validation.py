"""The field types of the request models, and how a model's refusal becomes one 400.

Each constraint is stated once, as a JSON Schema keyword that pydantic both enforces and
writes into the OpenAPI document (app/openapi.py), so the document and the validation
cannot disagree. Patterns use explicit ASCII classes, never \\s or \\d, whose meaning differs
between regex dialects (pydantic's, a fuzzer's, a client generator's)."""

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, TypeVar

import annotated_types as bounds
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic import ValidationError as ModelError

from app.errors import ValidationError

INT32 = (-(2**31), 2**31 - 1)
CENT = Decimal("0.01")
# NUL and the other control characters: no database stores NUL as text, and a name or a
# reference with a line break in it is a forged log line waiting to happen.
_CONTROL = r"\x00-\x1f\x7f"
PLAIN_TEXT = rf"^[^{_CONTROL}]*$"
# Plain text with at least one character that is not a space.
NON_BLANK_TEXT = rf"^[^{_CONTROL}]*[^{_CONTROL} ][^{_CONTROL}]*$"


class Model(BaseModel):
    """A request body: fields are checked strictly (no "3" for 3), unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", regex_engine="python-re")


def _integral(value):
    """JSON Schema counts 30.0 as the integer 30, so the API does too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(**limits) -> Any:
    """An integer within `limits` (ge, le, ...); 30.0 is 30, true is not 1."""
    return Annotated[int, Strict(), bounds.Interval(**limits), BeforeValidator(_integral)]


_QUERY_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _integer_text(value):
    """A query string's integer arrives as text: "5" is 5 (and " 5" or "5.0" is not)."""
    if isinstance(value, str) and _QUERY_INTEGER.fullmatch(value):
        return int(value)
    return value


def query_integer(**limits) -> Any:
    """An integer query parameter within `limits`."""
    return Annotated[int, Strict(), bounds.Interval(**limits), BeforeValidator(_integer_text)]


# An SSE event id (Last-Event-ID, lastEventId): the version or sequence number last received;
# empty is none, as an EventSource that has received no id would mean by it.
EVENT_ID = r"^(-?[0-9]{1,12})?$"
_EVENT_ID = re.compile(EVENT_ID)


def event_id(raw: str | None, label: str) -> int | None:
    """The event id a reconnecting client sends; None when it sends none."""
    if not raw:
        return None
    if not _EVENT_ID.fullmatch(raw):
        raise ValidationError.of_fields([(label, "must be an integer of at most 12 digits")])
    return int(raw)


def text(max_length: int, *, pattern: str = NON_BLANK_TEXT, min_length: int = 1) -> Any:
    """A string within the lengths and pattern, stored without surrounding spaces."""
    return Annotated[
        str,
        Field(min_length=min_length, max_length=max_length, pattern=pattern),
        AfterValidator(lambda value: value.strip(" ")),
    ]


def _cents(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def money(maximum: int) -> Any:
    """An amount from one cent to `maximum`, rounded to the cent (half up) and kept as a
    Decimal; the answer shows the amount kept.

    Not JSON Schema's multipleOf 0.01: on floats it refuses 19.99 (19.99 / 0.01 is
    1998.9999999999998), so no client or fuzzer could rely on it."""
    return Annotated[
        float,
        Field(ge=0.01, le=maximum, allow_inf_nan=False),
        AfterValidator(_cents),
    ]


def _exact(value: float) -> Decimal:
    return Decimal(str(value))


def exact_amount(maximum: int) -> Any:
    """A positive amount up to `maximum`, kept exactly as sent (a provider's report of what
    was paid: compared with the order's total, never rounded to match it)."""
    return Annotated[
        float,
        Field(gt=0, le=maximum, allow_inf_nan=False),
        AfterValidator(_exact),
    ]


def parse_json(raw: bytes):
    """A request body as JSON; anything unreadable (even nested past recursion) is a 400."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("body is not valid JSON") from None


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], payload) -> M:
    """`payload` as a `model`, or one ValidationError naming every field that is wrong."""
    try:
        return model.model_validate(payload)
    except ModelError as exc:
        raise ValidationError.of_fields(_field_errors(exc)) from None


# Pydantic's wording, where it would name its own internals (a regex, a Python type).
_MESSAGES = {
    "missing": "is required",
    "string_pattern_mismatch": "is not valid",
    "string_unicode": "is not valid text",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
}


def _field_errors(exc: ModelError) -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = _MESSAGES.get(error["type"]) or error["msg"][0].lower() + error["msg"][1:]
        found.setdefault(field, message)  # one message per field: a union tries each branch
    return list(found.items())
