"""Secrets kept out of every log line and error text: registered literals and DSN passwords.

Any layer that handles a secret (the chat connection's password, a database URL) registers
it here; `redact` is applied by the log formatter (`daz_actors.ops.logging`) and wherever
a text that may hold a secret leaves the process.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import re
import threading
import urllib.parse

__all__ = ["redact", "register_dsn_password", "register_secret"]

# ``scheme://user:PASSWORD@host``: greedy up to the netloc's last '@', like urlsplit
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/?#@]*:)[^\s/?#]*(?=@)", re.IGNORECASE)
# ``password=...`` in a query string or a libpq ``key=value`` DSN
_KV_PASSWORD = re.compile(
    r"""(\b(?:password|passwd)\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&]+)""",
    re.IGNORECASE,
)


class _Secrets:
    """The literal secrets registered at run time, as one compiled alternation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        # the forms a secret takes once quoted in a URL, a repr or a JSON string
        forms = {
            value,
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
            repr(value)[1:-1],
            jsonlib.dumps(value)[1:-1],
        }
        with self._lock:
            self._values |= {form for form in forms if form}
            ordered = sorted(self._values, key=len, reverse=True)
            self.pattern = re.compile("|".join(map(re.escape, ordered)))


_SECRETS = _Secrets()


def register_secret(value: str | None) -> None:
    """Redact `value` (a password, a token) from every log line from now on; empty is ignored."""
    if value:
        _SECRETS.add(value)


def register_dsn_password(dsn: str | None) -> None:
    """Register the password of a database URL or libpq ``key=value`` DSN, if it has one."""
    for match in _KV_PASSWORD.finditer(dsn or ""):
        register_secret(match[2].strip("'\""))
    if dsn and "://" in dsn:
        with contextlib.suppress(ValueError):
            password = urllib.parse.urlsplit(dsn).password
            register_secret(password and urllib.parse.unquote(password))


def redact(text: str) -> str:
    """`text` with registered secrets and DSN passwords replaced by ``***``."""
    pattern = _SECRETS.pattern
    if pattern is not None:
        text = pattern.sub("***", text)
    # each pattern needs its character ('@' ends a URL's password, '=' follows "password"):
    # most texts have neither, and a substring test is far cheaper than a regex search
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1***", text)
    if "=" in text:
        text = _KV_PASSWORD.sub(r"\1***", text)
    return text
