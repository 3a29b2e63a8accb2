"""Log output: one JSON object per line (or a console format on a terminal), secrets redacted.

This is the standard library's ``logging`` with a formatter of our own rather than
structlog: structlog would be a new dependency for what about a hundred lines of stdlib do,
and every module already logs through ``logging.getLogger``, so nothing else changes.
Structured fields travel in ``extra={"actor": ..., "correlation_id": ...}``.

Redaction is a `logging.Filter` on the handler, run before any formatting: it renders the
message with its args, the traceback and every extra field to text and replaces DSN
passwords and each secret given to `register_secret` by ``***``. See docs/logging.md.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from daz_actors.runtime.redaction import redact, register_dsn_password, register_secret

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "redact",
    "register_dsn_password",
    "register_secret",
]

# the structured fields, in output order, before any other extra
FIELDS = ("actor", "correlation_id", "event_id", "channel", "error_type", "error")
# every attribute of a plain LogRecord: whatever else a record holds came from ``extra``
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "daz_redacted",  # set by `RedactingFilter`: its extras are clean already
}
_MAX_DEPTH = 8


def _safe_repr(value: object, render: Callable[[object], str] = repr) -> str:
    try:
        return render(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _clean(value: object, depth: int = 0) -> Any:
    """A JSON-serialisable, redacted copy of `value` (anything else becomes its repr)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {redact(_safe_repr(k, str)): _clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_clean(item, depth + 1) for item in value]
    return redact(_safe_repr(value))


class RedactingFilter(logging.Filter):
    """Renders a record's message, traceback and extras to redacted text, in place.

    Afterwards ``msg`` is the final message with no ``args``, ``exc_text`` the traceback and
    every extra a JSON-safe value: neither our formatter nor a handler after ours sees a secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad args: log what we have rather than raise into the caller
            message = f"{_safe_repr(record.msg)} % {_safe_repr(record.args)}"
        record.msg, record.args = redact(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if "error_type" not in record.__dict__:
                record.error_type = type(exc).__name__
            if "error" not in record.__dict__:
                record.error = _safe_repr(exc, str)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD:
                record.__dict__[key] = _clean(value)
        record.daz_redacted = True  # the formatter need not clean the extras again
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras = {key: record.__dict__[key] for key in FIELDS if key in record.__dict__}
    extras.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
    return extras


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event, the extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        doc: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        extras = _extras(record)
        if record.__dict__.get("daz_redacted"):  # cleaned by `RedactingFilter` already
            doc.update((k, v) for k, v in extras.items() if k not in doc)
        else:  # a record that did not pass our filter (another handler's use of this class)
            doc.update((k, _clean(v)) for k, v in extras.items() if k not in doc)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return jsonlib.dumps(doc, ensure_ascii=False, default=_safe_repr)


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger: event [key=value ...]`` then any traceback, for a terminal."""

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-8s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        line = super().formatMessage(record)
        extras = _extras(record)
        if extras:
            line += " [" + " ".join(f"{k}={v}" for k, v in extras.items()) + "]"
        return line


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, so `configure_logging` can find and replace it."""


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    *, level: int, json: bool | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger's records at `level` and above to `stream` (default: stderr).

    JSON lines when `json` is true, or when it is None and `stream` is not a terminal;
    the console format otherwise. Calling it again replaces the handler it installed.
    """
    stream = sys.stderr if stream is None else stream
    use_json = not _is_tty(stream) if json is None else json
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler
