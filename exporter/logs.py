"""Logs on stderr, one line per event: plain `key=value` text or JSON (--log-format)."""

import json
import logging
import sys
import time
import traceback

from .redact import redact


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z"


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += " " + self.formatException(record.exc_info)
        # One event, one line: a newline inside a unit name or an error text is escaped.
        message = redact(message).replace("\\", "\\\\").replace("\n", "\\n")
        return f"{_utc(record)} {record.levelname.lower()} {record.name}: {message}"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {"time": _utc(record), "level": record.levelname.lower(),
                 "logger": record.name, "msg": redact(record.getMessage())}
        if record.exc_info:
            event["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(event, ensure_ascii=False)


def setup(fmt: str = "plain", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    sys.excepthook = _redacted_excepthook


def _redacted_excepthook(kind, value, tb) -> None:
    """A traceback that escapes every handler is printed redacted too."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))
