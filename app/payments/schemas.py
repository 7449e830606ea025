"""The PayHero STK callback body, validated into a Callback."""

import re
from dataclasses import dataclass
from decimal import Decimal

from app import validation as v

NUMERIC = re.compile(r"-?[0-9]{1,9}")  # ASCII digits only: "²".isdigit() is True

# ResultCode -> paymentStatus; every other code is a failure.
CANCELLED_CODES = frozenset({1, 1032})


@dataclass(frozen=True)
class Callback:
    order_number: str
    result_code: int
    amount: Decimal | None
    receipt: str | None
    checkout_request_id: str | None

    @property
    def payment_status(self) -> str:
        if self.result_code == 0:
            return "completed"
        if self.result_code in CANCELLED_CODES:
            return "cancelled"
        return "failed"


def _optional_text(obj: dict, field: str) -> str | None:
    value = obj.get(field)
    return None if value is None else v.text(value, f"response.{field}", max_len=128)


def parse_callback(payload) -> Callback:
    body = v.json_object(payload)
    response = v.required(body, "response")
    if not isinstance(response, dict):
        raise v.ValidationError("response must be an object")
    code = v.required(response, "ResultCode", "response.ResultCode")
    # Providers send the code as a number or as a numeric string.
    if isinstance(code, str) and NUMERIC.fullmatch(code.strip()):
        code = int(code)
    result_code = v.integer(code, "response.ResultCode", minimum=v.INT32[0], maximum=v.INT32[1])
    amount = response.get("Amount")
    if amount is None and result_code == 0:
        raise v.ValidationError("response.Amount is required for a successful payment")
    return Callback(
        order_number=v.text(
            v.required(response, "ExternalReference", "response.ExternalReference"),
            "response.ExternalReference",
            max_len=32,
        ),
        result_code=result_code,
        amount=None
        if amount is None
        else v.money(amount, "response.Amount", maximum=Decimal("100000000")),
        receipt=_optional_text(response, "MpesaReceiptNumber"),
        checkout_request_id=_optional_text(response, "CheckoutRequestID"),
    )
