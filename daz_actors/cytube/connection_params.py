"""A room's connection parameters, apart from the connection so that reading a config
imports no websocket or HTTP library."""

from __future__ import annotations

import os
import urllib.parse

import attrs

from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.redaction import register_secret
from daz_actors.runtime.validators import positive

__all__ = ["ConnectionParams"]


@attrs.frozen(kw_only=True)
class ConnectionParams:
    """How a room connects (the ``room`` kind's connection settings)."""

    server: str  # base URL of the CyTube server, e.g. "https://cytu.be"
    channel: str  # the channel to join
    name: str = ""  # the bot's account; empty: join without logging in (read only)
    password: str = attrs.field(default="", repr=False)  # prefer password_env
    password_env: str = "DAZ_CYTUBE_PASSWORD"  # environment variable holding the password
    reconnect_initial: float = attrs.field(default=2.0, validator=positive)
    reconnect_max: float = attrs.field(default=300.0, validator=positive)
    connect_timeout: float = attrs.field(default=15.0, validator=positive)
    echo_timeout: float = attrs.field(default=10.0, validator=positive)  # per part
    # the channel's password (prefer channel_password_env): answered to needPassword
    channel_password: str = attrs.field(default="", repr=False)
    channel_password_env: str = ""  # environment variable holding it ("" for none)
    hold: float = attrs.field(default=60.0, validator=positive)
    # seconds a send waits for the bot to be able to speak again (reconnecting, ...)
    login_retry: float = attrs.field(default=15.0, validator=positive)
    # seconds before logging in again after a temporary refusal that names no time
    lockout_initial: float = attrs.field(default=300.0, validator=positive)
    lockout_max: float = attrs.field(default=3600.0, validator=positive)
    # seconds before trying again after a wrong channel password or a duplicate login
    send_margin: float = attrs.field(default=0.01, validator=positive)
    send_margin_ratio: float = attrs.field(default=0.02, validator=positive)
    # how much later than the server's rate limiter allows a line is sent (jitter)

    def __attrs_post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.server)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"server must be an http(s) URL, got {self.server!r}")
        if not self.channel or any(c in self.channel for c in "/?# "):
            raise ValueError(f"channel must be a plain channel name, got {self.channel!r}")
        self.backoff()

    def backoff(self) -> BackoffPolicy:
        """The reconnect backoff: doubling, capped, ±25% jitter."""
        return BackoffPolicy(
            initial=self.reconnect_initial,
            multiplier=2.0,
            max_delay=max(self.reconnect_max, self.reconnect_initial),
            jitter=Jitter.PROPORTIONAL,
        )

    def lockout_backoff(self) -> BackoffPolicy:
        """The wait after a wrong channel password or a duplicate login: minutes, doubling."""
        return BackoffPolicy(
            initial=self.lockout_initial,
            multiplier=2.0,
            max_delay=max(self.lockout_max, self.lockout_initial),
            jitter=Jitter.PROPORTIONAL,
        )

    def resolved_password(self) -> str:
        """The password: the environment variable wins over the config value."""
        password = os.environ.get(self.password_env) or self.password
        register_secret(password)  # never in a log line, whatever logs it
        return password

    def resolved_channel_password(self) -> str:
        """The channel password: the environment variable wins over the config value."""
        env = os.environ.get(self.channel_password_env) if self.channel_password_env else None
        password = env or self.channel_password
        register_secret(password)
        return password
