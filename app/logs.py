"""Log lines: readable text by default, one JSON object per line with LOG_FORMAT=json.

Events that matter are logged with a short message and structured fields:
`log.info("wait answered", extra=fields(event="wait.answered", source="redis", ...))`.
Tokens and secrets are never logged; email addresses are masked, in fields and in free text.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# Greedy: a value holding the words themselves does not end the command early.
_PIPELINE_COMMAND = re.compile(r"Command # \d+ \(.*\) of pipeline caused error: ", re.DOTALL)
# The LogRecord attribute that carries an event's fields.
_FIELDS_ATTR = "fields"


def fields(**values) -> dict:
    """The `extra` of a structured log call."""
    return {_FIELDS_ATTR: values}


def mask_email(text: str) -> str:
    """j***@example.com: enough to tell customers apart in a log, not to contact them."""
    if "@" not in text:
        return text  # most lines: a scan for one character costs less than the regex
    return _EMAIL.sub(r"\1***@\2", text)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (database errors run to many), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redis_error(exc: BaseException) -> str:
    """A Redis error's message without the command redis-py writes into a failed pipeline's
    ("Command # 1 (SET key value) of pipeline caused error: ..."): a value can be an order's
    JSON, with the customer's name and email."""
    return _PIPELINE_COMMAND.sub("", str(exc)) or type(exc).__name__


def redact_url(url: str) -> str:
    """Hide the password of a URL so it can be logged."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def _masked(value):
    return mask_email(value) if isinstance(value, str) else value


class MaskEmails(logging.Filter):
    """Masks email addresses in the message and fields of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg, record.args = record.getMessage(), None
        if isinstance(record.msg, str):
            record.msg = mask_email(record.msg)
        extra = getattr(record, _FIELDS_ATTR, None)
        if extra and any(isinstance(v, str) and "@" in v for v in extra.values()):
            setattr(record, _FIELDS_ATTR, {k: _masked(v) for k, v in extra.items()})
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, _FIELDS_ATTR, {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`"""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, _FIELDS_ATTR, None)
        if not extra:
            return line
        pairs = " ".join(f"{key}={value}" for key, value in extra.items() if key != "event")
        head, _, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {pairs}" + (f"\n{tail}" if tail else "")


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")


def configure(log_format: str, level: str) -> None:
    """One handler on the root logger, and the same format for gunicorn's own error log.

    A root logger that has handlers already (a test runner, an embedding application) is
    left alone, apart from the level.
    """
    root = logging.getLogger()
    chosen = formatter(log_format)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(chosen)
        handler.addFilter(MaskEmails())
        root.addHandler(handler)
        # gunicorn's error log (worker boots, timeouts) in the same shape, once in a worker.
        for handler in logging.getLogger("gunicorn.error").handlers:
            handler.setFormatter(chosen)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin chatter at import
