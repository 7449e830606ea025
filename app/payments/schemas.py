"""The webhook's contract: the PayHero STK callback it takes and the outcome it answers.

The callback is validated by these models and the OpenAPI document is generated from them
(app/openapi.py); Outcome.to_json builds the answer that CallbackOutcome describes."""

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from app import validation as v

# ResultCode -> paymentStatus; every other code is a failure.
CANCELLED_CODES = frozenset({1, 1032})
# A code sent as text: digits, maybe signed and padded with spaces ("0", " 0", "00", "1032").
CODE_TEXT = r"^ *-?[0-9]{1,9} *$"
_CODE_TEXT = re.compile(CODE_TEXT)
# The codes that mean success, as the schema's success rule below says: 0, 0.0, "00", " 0 ".
SUCCESS_CODE = {"anyOf": [{"const": 0}, {"type": "string", "pattern": r"^ *-?0{1,9} *$"}]}
MAX_CALLBACK_AMOUNT = 100_000_000


def _code_from_text(value):
    if isinstance(value, str) and _CODE_TEXT.fullmatch(value):
        return int(value)
    return value


# The one field whose schema is written here: a number or a numeric string, which pydantic
# would express as a union of two validators (and two errors for one field).
ResultCode = Annotated[
    v.integer(ge=v.INT32[0], le=v.INT32[1]),
    BeforeValidator(_code_from_text),
    WithJsonSchema(
        {
            "description": "A number, or a numeric string.",
            "anyOf": [
                {"type": "integer", "minimum": v.INT32[0], "maximum": v.INT32[1]},
                {"type": "string", "pattern": CODE_TEXT},
            ],
        }
    ),
]
# A receipt or request id, stored when given; providers send "" when there is none.
OptionalId = v.text(128, pattern=v.PLAIN_TEXT, min_length=0) | None


class StkResponse(v.Model):
    model_config = ConfigDict(
        # The rule no field expresses alone, stated for the document; parse_callback
        # enforces it.
        json_schema_extra={
            "if": {"properties": {"ResultCode": SUCCESS_CODE}, "required": ["ResultCode"]},
            "then": {"required": ["Amount"], "properties": {"Amount": {"type": "number"}}},
        }
    )

    ResultCode: ResultCode
    ExternalReference: v.text(32) = Field(description="The orderNumber.")
    Amount: v.exact_amount(MAX_CALLBACK_AMOUNT) | None = Field(
        None,
        description="Required when ResultCode is 0. Taken as sent: one that is not the "
        "order's total (99.995 for 100.00 included) fails the order with amount_mismatch.",
    )
    MpesaReceiptNumber: OptionalId = None
    CheckoutRequestID: OptionalId = None
    # Sent by the provider and kept in no column: whatever their type, they are no reason
    # to refuse a payment.
    MerchantRequestID: Any = None
    Phone: Any = None
    ResultDesc: Any = None
    Status: Any = None


class CallbackBody(v.Model):
    """The PayHero STK callback. ResultCode 0: completed (paid); 1 or 1032: cancelled; any
    other: failed. An Amount that differs from the order total never marks the order paid."""

    status: Any = None  # unused, any type
    response: StkResponse


class Callback:
    """A callback as the settlement uses it."""

    __slots__ = ("order_number", "result_code", "amount", "receipt", "checkout_request_id")

    def __init__(self, body: CallbackBody):
        response = body.response
        self.order_number: str = response.ExternalReference
        self.result_code: int = response.ResultCode
        self.amount: Decimal | None = response.Amount
        self.receipt: str | None = response.MpesaReceiptNumber or None
        self.checkout_request_id: str | None = response.CheckoutRequestID or None

    @property
    def payment_status(self) -> str:
        if self.result_code == 0:
            return "completed"
        if self.result_code in CANCELLED_CODES:
            return "cancelled"
        return "failed"


def parse_callback(payload) -> Callback:
    body = v.validated(CallbackBody, payload)
    if body.response.ResultCode == 0 and body.response.Amount is None:
        raise v.ValidationError.of_fields([("response.Amount", "is required for a payment")])
    return Callback(body)


class CallbackOutcome(BaseModel):
    success: bool
    orderId: str
    paymentStatus: str
    status: str
    version: int
    changed: bool = Field(description="This delivery changed the order.")
    duplicate: bool = Field(description="A repeat of the settled outcome.")
    reason: str | None
