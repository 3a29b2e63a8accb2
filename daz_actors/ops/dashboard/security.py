"""The dashboard's guards: the access token and the CSRF check of every form.

- Token: with one configured, every dashboard request needs ``Authorization: Bearer TOKEN``
  or the session cookie that ``/login`` sets once the token is entered there. The cookie
  holds an HMAC of the token, never the token itself. Without a token (loopback only, see
  `check_exposure`) nothing is asked.
- Host: without a token the dashboard answers only requests addressed to a loopback name
  or address (``127.0.0.1``, ``[::1]``, ``localhost``), so a web page whose domain is made
  to resolve to 127.0.0.1 (DNS rebinding) cannot read it or post its forms.
- CSRF: a random value in an HttpOnly, SameSite=Strict cookie, repeated in a hidden field of
  every form (double submit). A POST whose field does not match, or whose Origin is another
  site, is refused with 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse

from starlette.requests import Request
from starlette.responses import Response

from daz_actors.ops.dashboard.settings import DashboardSettings, is_loopback

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SESSION_COOKIE", "Guard"]

SESSION_COOKIE = "daz_dashboard_session"
CSRF_COOKIE = "daz_dashboard_csrf"
CSRF_FIELD = "csrf"


class Guard:
    """Checks requests against the settings' token and the CSRF cookie."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._key = secrets.token_bytes(32)  # per process: sessions end with it

    def session_value(self) -> str:
        """What the session cookie holds once the token was given."""
        token = self.settings.token or ""
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        token = self.settings.token
        return token is not None and hmac.compare_digest(given.encode(), token.encode())

    def allowed(self, request: Request) -> bool:
        """True when no token is configured, or the request carries it (header or session)."""
        if self.settings.token is None:
            return True
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(given.strip()):
            return True
        session = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(session.encode(), self.session_value().encode())

    def host_ok(self, request: Request) -> bool:
        """True when a token guards the dashboard, or the request names a loopback host."""
        if self.settings.token is not None:
            return True
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("[") and "]" in host:
            name = host[1 : host.index("]")]
        return is_loopback(name)

    @staticmethod
    def csrf_token(request: Request) -> tuple[str, bool]:
        """The request's CSRF value, and whether it is new (the response must set it)."""
        current = request.cookies.get(CSRF_COOKIE)
        if current and len(current) >= 32:
            return current, False
        return secrets.token_urlsafe(32), True

    @staticmethod
    def set_csrf_cookie(response: Response, value: str) -> None:
        response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="strict", path="/")

    @staticmethod
    def csrf_ok(request: Request, form: dict[str, str]) -> bool:
        """True when the form's CSRF field matches the cookie and the Origin is this site."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            host = request.headers.get("host", "")
            if urllib.parse.urlsplit(origin).netloc != host:
                return False
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = form.get(CSRF_FIELD, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), given.encode())
