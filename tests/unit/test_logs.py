"""Email addresses never reach a log line whole, wherever in the record they are."""

import logging

from app.logs import MaskEmails, fields, mask_email


def record(msg, *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_addresses_are_masked_in_text_and_other_text_is_left_as_it_is():
    assert mask_email("paid by jane.doe+x@example.co.ke now") == "paid by j***@example.co.ke now"
    assert mask_email("order ORD-1 version=2 @ noon") == "order ORD-1 version=2 @ noon"
    assert mask_email("no address") == "no address"


def test_the_filter_masks_the_message_its_arguments_and_the_fields():
    rec = record("order for %s", "jane@example.com", **fields(email="bob@example.org", n=3))
    assert MaskEmails().filter(rec) is True
    assert rec.getMessage() == "order for j***@example.com"
    assert rec.fields == {"email": "b***@example.org", "n": 3}


def test_fields_without_an_address_are_left_untouched():
    values = {"order_id": "5f0c", "source": "redis", "version": 2}
    rec = record("wait answered by %s", "redis", **fields(**values))
    MaskEmails().filter(rec)
    assert rec.getMessage() == "wait answered by redis"
    assert rec.fields == values
