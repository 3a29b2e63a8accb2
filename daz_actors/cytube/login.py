"""Which refused logins are worth trying again, and when (pure).

CyTube answers ``login`` with ``{success: false, error}`` (``src/user.js``). Some errors
pass with time: "Guest logins are restricted to one per IP address per 60 seconds." (the
server says how long), "That name is already in use on this channel." (an older session of
ours may still be leaving), or a database error. Others do not: a wrong password, an
invalid name, a guest name that is a registered account. A permanent refusal is not
retried (the room says why); a temporary one is retried on the same connection after the
time the server gives.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["LoginVerdict", "judge_login_error"]

PERMANENT_ERRORS = (
    "Invalid username/password combination",
    "Invalid username.",
    "That username is registered.",
)
_GUEST_DELAY = re.compile(r"one per IP address per (\d+(?:\.\d+)?) seconds")


@attrs.frozen(kw_only=True)
class LoginVerdict:
    """What to do about a refused login."""

    permanent: bool
    retry_after: float = 0.0  # seconds to wait before logging in again (temporary only)


def judge_login_error(error: str, *, default_wait: float) -> LoginVerdict:
    """The verdict on `error`; an unknown error is temporary, retried after `default_wait`."""
    if any(error.startswith(text) for text in PERMANENT_ERRORS):
        return LoginVerdict(permanent=True)
    match = _GUEST_DELAY.search(error)
    if match:
        return LoginVerdict(permanent=False, retry_after=float(match.group(1)) + 1.0)
    return LoginVerdict(permanent=False, retry_after=default_wait)
