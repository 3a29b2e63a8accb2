"""The ``rooms`` kind's parameters, apart from the rooms so that reading a config imports
no websocket, HTTP or database library."""

from __future__ import annotations

from typing import Any

import attrs

from daz_actors.cytube.connection_params import ConnectionParams
from daz_actors.cytube.router_params import RouterParams

__all__ = ["RoomsParams"]


def _channels(_inst: object, _attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if len(set(value)) != len(value):
        raise ValueError(f"channels must not repeat, got {list(value)}")
    for channel in value:  # checked here so that the error names this key
        if not channel or any(c in channel for c in "/?# ") or not channel.isprintable():
            raise ValueError(f"channels must be plain channel names, got {channel!r}")


@attrs.frozen(kw_only=True)
class RoomsParams:
    """Parameters of the ``rooms`` kind: the server, the bot's account, the channels."""

    server: str = "https://cytu.be"  # base URL of the CyTube server
    channels: tuple[str, ...] = attrs.field(default=(), validator=_channels)  # joined at start
    name: str = ""  # the bot's account (empty: read only, no replies)
    password_env: str = "DAZ_CYTUBE_PASSWORD"  # where the password comes from
    password: str = attrs.field(default="", repr=False)  # discouraged: use password_env
    reconnect_initial: float = 2.0  # seconds, doubling ...
    reconnect_max: float = 300.0  # ... up to this, ±25% jitter
    echo_timeout: float = 10.0  # seconds for the server to echo a sent line
    # channel -> environment variable holding that channel's password (needPassword)
    channel_password_env: dict[str, str] = attrs.field(factory=dict)
    # channel -> password in the file (discouraged: use channel_password_env)
    channel_passwords: dict[str, str] = attrs.field(factory=dict, repr=False)
    hold: float = 60.0  # seconds a reply waits for the bot to be able to speak again
    login_retry: float = 15.0  # seconds before logging in again after a temporary refusal
    lockout_initial: float = 300.0  # seconds after a wrong channel password or a duplicate
    lockout_max: float = 3600.0  # login, doubling up to this
    command_prefix: str = "!"
    command_cooldown: float = 3.0  # seconds per user per command
    debug_min_rank: float = 2  # the rank `!debug` needs
    log_history: bool = True  # store the lines the server replays on join (flagged)
    log_batch: int = 500  # chat log rows written in one transaction at most
    log_buffer: int = 20_000  # chat log rows waiting at most (then the router waits)

    def __attrs_post_init__(self) -> None:
        for channel in self.channels:
            self.connection(channel)
            self.router(channel)

    def connection(self, channel: str) -> ConnectionParams:
        """The connection settings of one channel."""
        return ConnectionParams(
            server=self.server,
            channel=channel,
            name=self.name,
            password=self.password,
            password_env=self.password_env,
            reconnect_initial=self.reconnect_initial,
            reconnect_max=self.reconnect_max,
            echo_timeout=self.echo_timeout,
            channel_password=self.channel_passwords.get(channel, ""),
            channel_password_env=self.channel_password_env.get(channel, ""),
            hold=self.hold,
            login_retry=self.login_retry,
            lockout_initial=self.lockout_initial,
            lockout_max=self.lockout_max,
        )

    def router(self, channel: str) -> RouterParams:
        """The event router settings of one channel."""
        return RouterParams(
            channel=channel,
            bot_name=self.name,
            command_prefix=self.command_prefix,
            command_cooldown=self.command_cooldown,
            debug_min_rank=int(self.debug_min_rank),
            log_history=self.log_history,
            log_batch=self.log_batch,
            log_buffer=self.log_buffer,
        )
