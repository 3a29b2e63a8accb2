"""The connection actor: one CyTube channel over Socket.IO v4 on trio-websocket.

One incarnation keeps a session going: discovery through ``/socketconfig/<channel>.json``,
the Engine.IO/Socket.IO handshake, ``joinChannel`` and ``login``, answering the server's
pings (a server silent for longer than ping interval + ping timeout is dead), typed events
to the room's event router, and reconnects with the shared backoff (2 s doubling to 5 min,
±25%). It reports ready at once: the room works on while the server is away.

The room is *joined* once the server has let the bot in, shown by the ``userlist`` it
sends only then (after the channel password, if any, was accepted), and, with a name
configured, once ``login`` succeeded. A channel password is answered from the config
(``channelPassword``); a wrong or missing one, and a kick for a duplicate login, end the
session with one clear error and a long wait before the next try (`lockout_initial`
doubling to `lockout_max`). A refused login is retried on the same connection after the
time the server gives when it is temporary, never when it is permanent.

Outgoing chat (`SendChat`/`SendPrivate`) goes through the connection's `Sender`: split at
320 characters, paced by a mirror of the server's rate limiter, and delivered when the
server's echo comes back. A part that fails (no echo in time, refused for good, the
connection lost) fails the send: a ``cytube.send.failed`` failure event is published (the
retry queue retries it with the ``cytube_command`` policy) and the asker gets `SendFailed`.
While the bot cannot speak, sends wait (for now) or fail at once with `CannotSpeak` (for a
lasting reason): neither is queued for a retry. Passwords are never logged.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from daz_actors.cytube.codec import (
    Close,
    Connect,
    ConnectError,
    Disconnect,
    Event,
    FrameError,
    OpenPacket,
    Ping,
    decode,
    encode_event,
)
from daz_actors.cytube.connection_params import ConnectionParams as ConnectionParams
from daz_actors.cytube.events import (
    ChannelOptions,
    ChatMessage,
    ConnectionState,
    ConnectionStatus,
    Cooldown,
    Delivered,
    ErrorMessage,
    Kicked,
    LoginResult,
    MediaUpdate,
    OwnRank,
    PasswordAccepted,
    PasswordRequest,
    PrivateMessage,
    SendChat,
    SendPrivate,
    UserList,
)
from daz_actors.cytube.fence import OPEN, Fence
from daz_actors.cytube.inbound import MalformedEvent, check_event
from daz_actors.cytube.intents import SAY, Say
from daz_actors.cytube.login import judge_login_error
from daz_actors.cytube.pacing import Margin, chat_params
from daz_actors.cytube.protocol import to_typed_event
from daz_actors.cytube.sender import CannotSpeak, Sender, SendFailed
from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.errors import ActorStopped, DazActorsError
from daz_actors.runtime.events import FailureEvent
from daz_actors.runtime.log_summary import RepeatedWarnings
from daz_actors.runtime.mailbox import Ask

__all__ = ["CannotSpeak", "ConnectionParams", "CytubeConnection", "SendFailed"]

log = logging.getLogger("daz_actors.cytube")

SEND_FAILED_TOPIC = "cytube.send.failed"


DUPLICATE_LOGIN = "Duplicate login"  # the kick reason when our account joined elsewhere


class SessionEnded(DazActorsError, ConnectionError):
    """The session with the server ended; the connection reconnects with backoff."""


class LeaseLost(SessionEnded):
    """The room's fence closed (its process no longer holds the channel): the session ends
    and no other one starts."""


class Lockout(SessionEnded):
    """The session ended for a reason that will not pass soon (a wrong channel password, a
    duplicate login): the next try waits long."""

    def __init__(self, status: ConnectionStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every connection of the process: making one loads the system's
    certificates (about 45 ms of CPU here), which, per session, stalled the event loop for
    seconds when many rooms (re)connected at once."""
    return ssl.create_default_context()


@contextlib.asynccontextmanager
async def _open_websocket(url: str, timeout: float) -> AsyncIterator[WebSocketConnection]:
    """A client websocket whose TCP stream is always closed.

    (trio-websocket 0.12's own `open_websocket_url` leaves the socket open when the server
    closes first, as CyTube does on a kick.)
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    with trio.fail_after(timeout):
        if secure:
            stream: Any = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=_tls()
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(timeout):
                ws = await wrap_client_stream(nursery, stream, host, resource)
            try:
                yield ws
            finally:
                # when the session was cancelled (an orderly stop), the nursery's reader is
                # cancelled too and the server's close reply is never read: send the close
                # frame, wait briefly, then drop the stream
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


DELAYS_KEPT = 100  # reconnect waits remembered (the newest)
CLOSE_TIMEOUT = 0.5  # seconds for the websocket close handshake at the end of a session


def _text(frame: str | bytes) -> str:
    if isinstance(frame, bytes):
        raise FrameError("binary websocket frames are not supported")
    return frame


_SESSION_ERRORS = (
    OSError,
    httpx.HTTPError,
    HandshakeError,
    ConnectionClosed,
    FrameError,
    SessionEnded,
    trio.TooSlowError,
    ValueError,
)


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


_OCCURRENCES_KEPT = 4096  # (user, time, text) keys kept per session before pruning
_OCCURRENCE_WINDOW_MS = 60_000  # keys older than this (server time) are pruned


class CytubeConnection:
    """A `Startable` holding one channel's connection; state survives incarnations."""

    def __init__(self, params: ConnectionParams, *, fence: Fence = OPEN) -> None:
        self.params = params
        self.fence = fence  # closed: say nothing, pass nothing on, leave the channel
        self.dropped_fenced = 0  # events received after the fence closed (not passed on)
        self.status = ConnectionStatus.DISCONNECTED
        self.status_reason = ""  # why it is in that status
        self.status_since = time.time()  # wall-clock time of the last change of status
        self.last_event_at: float | None = None  # wall-clock time of the last typed event
        self.reconnects = 0  # sessions started after the first
        self.last_media_update: float | None = None  # trio time of the last mediaUpdate
        self.received = 0  # typed events received
        # the last DELAYS_KEPT reconnect waits (for checks and health)
        self.delays: collections.deque[float] = collections.deque(maxlen=DELAYS_KEPT)
        self.rank: float = -1  # the bot's own effective rank (the `rank` event)
        self.options: dict[str, Any] = {}  # the channel's options (channelOpts)
        self.not_before = -math.inf  # trio time before which no session starts (lockouts)
        self.lockouts = 0  # lockouts in a row (wrong channel password, duplicate login)
        self.sender = Sender(
            params.channel,
            echo_timeout=params.echo_timeout,
            hold=params.hold,
            margin=Margin(ratio=params.send_margin_ratio, fixed=params.send_margin),
        )
        # one warning per kind per interval (sends failing in an outage), the rest at DEBUG
        self._warnings = RepeatedWarnings(log)
        self.rejected: collections.Counter[tuple[str, str]] = collections.Counter()
        # (event, reason) -> events dropped at the protocol boundary (see cytube/inbound.py)
        self.flagged: collections.Counter[tuple[str, str]] = collections.Counter()
        # (event, flag) -> events stored changed: text replaced or cut, time replaced
        self._ws: Any = None
        self._in_session = False  # between the start of a session and the end of it
        self._joined_once = False
        self._new_session()

    @property
    def sent(self) -> int:
        """Parts delivered (echoed)."""
        return self.sender.sent

    def _new_session(self) -> None:
        self._in_channel = False  # the server let us in: its userlist came
        self._logged_in = False
        self._login_error: str | None = None  # a refused login, for good
        self._login_at: float | None = None  # trio time to log in again (temporary refusal)
        self._password_sent = False
        self._password_deadline: float | None = None  # waiting to be let in without one
        self._occurrences: dict[tuple[Any, ...], int] = {}

    # ------------------------------------------------------------------ running

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._ctx = ctx
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_requests, ctx)
            nursery.start_soon(self.sender.run)
            nursery.start_soon(self._vacate_when_fenced)
            task_status.started()
            await self._keep_connected(ctx)

    async def _keep_connected(self, ctx: ActorContext) -> None:
        backoff = self.params.backoff()
        attempt = 0
        previous: float | None = None
        while True:
            # a restarted incarnation still waits out a lockout
            await trio.sleep_until(max(self.not_before, trio.current_time()))
            if not self.fence.is_open():  # the lease is gone: stay out until stopped
                self.sender.set_speaking(False, "this process no longer holds the channel")
                await self._set_status(ConnectionStatus.DISCONNECTED, "lease lost", quiet=True)
                await trio.sleep_forever()
            self._joined_once = False
            reason = "the server closed the session"
            lockout: Lockout | None = None
            try:
                self._in_session = True
                await self._session(ctx)
            except* _SESSION_ERRORS as group:
                error = _first_leaf(group)
                if isinstance(error, Lockout):
                    lockout = error
                reason = f"{type(error).__name__}: {error}"
                if isinstance(error, FrameError):  # a malformed frame: counted, then reconnect
                    self.rejected[("frame", "frame_error")] += 1
            finally:
                self._ws = None
                self._in_session = False
                self.sender.set_session(None)
                if not self.fence.is_open():  # the websocket is closed: out of the channel
                    self.fence.vacated()
            if lockout is not None:
                delay = self.params.lockout_backoff().delay(self.lockouts)
                self.lockouts += 1
                reason = f"{lockout.reason}; trying again in {delay:.0f} s"
                self.sender.set_speaking(False, reason, lasting=True)
                log.error("room %s: %s", self.params.channel, reason)
                await self._set_status(lockout.status, reason, quiet=True)
            else:
                if self._joined_once:
                    attempt, self.lockouts = 0, 0
                delay = backoff.delay(attempt, previous=previous)
                previous = delay
                attempt += 1
                self.sender.set_speaking(False, f"disconnected ({reason})")
                await self._set_status(ConnectionStatus.DISCONNECTED, reason, quiet=True)
                log.warning(
                    "room %s: disconnected (%s); reconnecting in %.1f s",
                    self.params.channel, reason, delay,
                )  # fmt: skip
            self.delays.append(delay)
            self.not_before = trio.current_time() + delay
            await trio.sleep(delay)
            self.reconnects += 1

    async def _discover(self) -> str:
        """The websocket URL of the channel's server, from /socketconfig/<channel>.json."""
        url = f"{self.params.server.rstrip('/')}/socketconfig/{self.params.channel}.json"
        async with httpx.AsyncClient(timeout=self.params.connect_timeout, verify=_tls()) as client:
            response = await client.get(url)
        response.raise_for_status()
        servers = response.json().get("servers", [])
        if not servers or not isinstance(servers[0], dict) or "url" not in servers[0]:
            raise SessionEnded(f"no server listed in {url}")
        base = urllib.parse.urlsplit(str(servers[0]["url"]))
        scheme = "wss" if base.scheme == "https" else "ws"
        return urllib.parse.urlunsplit(
            (scheme, base.netloc, "/socket.io/", "EIO=4&transport=websocket", "")
        )

    async def _session(self, ctx: ActorContext) -> None:
        """One session, until the server closes it or it fails."""
        self._new_session()
        self.sender.set_speaking(False, "connecting")
        await self._set_status(ConnectionStatus.CONNECTING, "")
        with trio.fail_after(self.params.connect_timeout):
            ws_url = await self._discover()
        async with (
            _open_websocket(ws_url, self.params.connect_timeout) as ws,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._leave_when_fenced)
            await self._run_session(ctx, ws)
            nursery.cancel_scope.cancel()

    async def _vacate_when_fenced(self) -> None:
        """Tell the fence the room is out once it closes between sessions (a session in
        progress tells it when it ends)."""
        await self.fence.wait_closed()
        if not self._in_session:
            self.fence.vacated()

    async def _leave_when_fenced(self) -> None:
        """End the session (closing the websocket) as soon as the fence closes."""
        await self.fence.wait_closed()
        log.warning(
            "room %s: this process no longer holds the channel; leaving it", self.params.channel
        )
        raise LeaseLost("the channel's lease was lost")

    def _fenced(self, send: Any) -> Any:
        """`send`, refusing every frame once the fence is closed (checked at the write)."""
        fence = self.fence

        async def fenced_send(frame: str) -> None:
            if not fence.is_open():
                raise LeaseLost("the channel's lease was lost: not said")
            await send(frame)

        return fenced_send

    async def _login(self, ws: WebSocketConnection) -> None:
        login: dict[str, str] = {"name": self.params.name}
        password = self.params.resolved_password()
        if password:
            login["pw"] = password
        await ws.send_message(encode_event("login", login))

    async def _run_session(self, ctx: ActorContext, ws: WebSocketConnection) -> None:
        """Handshake, join, login, then read frames until the session ends."""
        with trio.fail_after(self.params.connect_timeout):
            opened = decode(_text(await ws.get_message()))
            if not isinstance(opened, OpenPacket):
                raise SessionEnded(f"expected the open packet, got {type(opened).__name__}")
            await ws.send_message("40")
            while not isinstance(reply := decode(_text(await ws.get_message())), Connect):
                if isinstance(reply, ConnectError):
                    raise SessionEnded(f"the server refused the connection: {reply.data}")
        silence = (opened.ping_interval_ms + opened.ping_timeout_ms) / 1000
        self._ws = ws
        self.last_media_update = None  # a new session: nothing seen yet
        self.sender.set_session(self._fenced(ws.send_message))
        await ws.send_message(encode_event("joinChannel", {"name": self.params.channel}))
        if self.params.name:
            await self._login(ws)
        await self._update_status()
        while True:
            timers = [t for t in (self._login_at, self._password_deadline) if t is not None]
            with trio.move_on_at(min([trio.current_time() + silence, *timers])) as quiet:
                frame = await ws.get_message()
            if quiet.cancelled_caught:
                await self._on_timer(ws, silence)
                continue
            packet = decode(_text(frame))
            if isinstance(packet, Ping):
                await ws.send_message("3")
            elif isinstance(packet, Event):
                await self._on_event(ctx, ws, packet)
            elif isinstance(packet, Close | Disconnect):
                return

    async def _on_timer(self, ws: WebSocketConnection, silence: float) -> None:
        now = trio.current_time()
        if self._login_at is not None and now >= self._login_at:
            self._login_at = None
            log.info("room %s: logging in again as %r", self.params.channel, self.params.name)
            await self._login(ws)
        elif self._password_deadline is not None and now >= self._password_deadline:
            raise Lockout(ConnectionStatus.PASSWORD_REFUSED, self._missing_password())
        else:
            raise SessionEnded(f"no ping from the server for {silence:g} s: it is dead")

    def _missing_password(self) -> str:
        where = self.params.channel_password_env or "channel_password_env"
        return (
            f"channel {self.params.channel!r} needs a password and none is configured "
            f"(set it in ${where})"
        )

    # ------------------------------------------------------------------ events

    async def _on_event(self, ctx: ActorContext, ws: WebSocketConnection, packet: Event) -> None:
        """Handle one server event: update the state, forward it to the router."""
        channel = self.params.channel
        self._warnings.flush_due()  # the count of a burst of warnings that is over
        if not self.fence.is_open():  # received after the lease may have moved: not ours
            self.dropped_fenced += 1
            raise LeaseLost("the channel's lease was lost")
        try:
            checked = check_event(packet.name, packet.args, received_ms=int(time.time() * 1000))
        except MalformedEvent as exc:
            self.rejected[(exc.event, exc.reason)] += 1
            self._warnings.warning(
                f"dropped:{exc.event}:{exc.reason}",
                "room %s: %s event dropped: %s", channel, exc.event, exc.reason,
            )  # fmt: skip
            return
        event = to_typed_event(channel, packet.name, checked.args, history=not self._in_channel)
        if event is None:
            return
        # counted by name only for events the bot knows: a metric label never carries a
        # name the server made up
        for flag in checked.flags:
            self.flagged[(packet.name, flag)] += 1
        self.received += 1
        self.last_event_at = time.time()
        if isinstance(event, ChatMessage | PrivateMessage):
            event = attrs.evolve(event, seq=self._occurrence(event))
        await self._apply(ws, event)
        router = ctx.registry.get(self._router_name())
        if router is not None:
            await router.send(event)
        if isinstance(event, Kicked):
            if event.reason == DUPLICATE_LOGIN:
                raise Lockout(
                    ConnectionStatus.DUPLICATE_LOGIN,
                    f"kicked from {self.params.channel!r}: {DUPLICATE_LOGIN} (the account "
                    f"{self.params.name!r} joined this channel from elsewhere)",
                )
            raise SessionEnded(f"kicked: {event.reason}")

    async def _apply(self, ws: WebSocketConnection, event: object) -> None:
        """What the event changes in the connection's own state."""
        channel = self.params.channel
        if isinstance(event, UserList):
            self._in_channel = True
            self._password_deadline = None
            await self._update_status()
        elif isinstance(event, LoginResult):
            await self._on_login(event)
        elif isinstance(event, ChatMessage) and not event.history and self._is_me(event.username):
            self.sender.echoed(event.text)
        elif isinstance(event, PrivateMessage) and self._is_me(event.username):
            self.sender.echoed(event.text, to=event.to)
        elif isinstance(event, Cooldown):
            log.info("room %s: the server refused a line (cooldown %g ms)", channel, event.wait_ms)
            self.sender.cooldown(event.wait_ms)
        elif isinstance(event, ErrorMessage) and event.kind in ("spamFiltered", "noflood"):
            self.sender.refused_for_good(f"{event.kind}: {event.msg}")
        elif isinstance(event, ErrorMessage) and event.kind == "errorMsg":
            self.sender.refused_for_good(f"errorMsg: {event.msg}", private_only=True)
        elif isinstance(event, OwnRank):
            self.rank = event.rank
            self.sender.set_chat_params(chat_params(self.options, self.rank))
        elif isinstance(event, ChannelOptions):
            self.options.update(event.options)
            self.sender.set_chat_params(chat_params(self.options, self.rank))
        elif isinstance(event, PasswordRequest):
            await self._on_password_request(ws, event)
        elif isinstance(event, PasswordAccepted):
            self._password_deadline = None
            log.info("room %s: the channel let the bot in past its password", channel)
        elif isinstance(event, Kicked) and event.reason != DUPLICATE_LOGIN:
            log.error("room %s: kicked: %s", channel, event.reason)  # (a duplicate: one line later)
        elif isinstance(event, MediaUpdate):
            self.last_media_update = trio.current_time()

    async def _on_login(self, event: LoginResult) -> None:
        channel = self.params.channel
        if event.success:
            self._logged_in, self._login_error, self._login_at = True, None, None
        else:
            error = event.error or "no reason given"
            verdict = judge_login_error(error, default_wait=self.params.login_retry)
            if verdict.permanent:
                self._login_error = error
                log.error(
                    "room %s: login as %r refused for good: %s (the bot stays read only)",
                    channel, self.params.name, error,
                )  # fmt: skip
            else:
                self._login_at = trio.current_time() + verdict.retry_after
                log.warning(
                    "room %s: login as %r refused for now: %s; logging in again in %.0f s",
                    channel, self.params.name, error, verdict.retry_after,
                )  # fmt: skip
        await self._update_status()

    async def _on_password_request(self, ws: WebSocketConnection, event: PasswordRequest) -> None:
        channel = self.params.channel
        password = self.params.resolved_channel_password()
        if self._password_sent and event.wrong:
            where = self.params.channel_password_env or "channel_password"
            raise Lockout(
                ConnectionStatus.PASSWORD_REFUSED,
                f"channel {channel!r} refused its password (from ${where})",
            )
        if password and not self._password_sent:
            self._password_sent = True
            await ws.send_message(encode_event("channelPassword", password))
        elif not password:
            if not self.params.name:
                raise Lockout(ConnectionStatus.PASSWORD_REFUSED, self._missing_password())
            # a login of rank 2 or more lets the bot in without one: wait for it a little
            self._password_deadline = trio.current_time() + self.params.connect_timeout
        await self._update_status()

    def _occurrence(self, event: ChatMessage | PrivateMessage) -> int:
        """How often this (user, time, raw text) came before, in this session's live lines
        or in its history replay: part of the line's identity."""
        history = isinstance(event, ChatMessage) and event.history
        to = event.to if isinstance(event, PrivateMessage) else None
        key = (type(event).__name__, history, event.username, to, event.time, event.msg)
        seen = self._occurrences.get(key, 0)
        self._occurrences[key] = seen + 1
        if len(self._occurrences) > _OCCURRENCES_KEPT:
            oldest = event.time - _OCCURRENCE_WINDOW_MS
            self._occurrences = {k: n for k, n in self._occurrences.items() if k[4] >= oldest}
        return seen

    async def _update_status(self) -> None:
        """The status from what the server said: let in (userlist), logged in."""
        named = bool(self.params.name)
        lasting = False
        if not self._in_channel:
            status, reason = (
                ConnectionStatus.CONNECTING,
                (
                    "waiting to be let in without a channel password"
                    if self._password_deadline is not None
                    else "channel password sent"
                    if self._password_sent
                    else "waiting to be let in"
                ),
            )
        elif named and self._login_error is not None:
            status, reason, lasting = (
                ConnectionStatus.LOGIN_FAILED,
                f"login as {self.params.name!r} refused: {self._login_error}",
                True,
            )
        elif named and self._login_at is not None:
            wait = max(0.0, self._login_at - trio.current_time())
            status, reason = (
                ConnectionStatus.LOGIN_RETRY,
                f"login refused for now; logging in again in {wait:.0f} s",
            )
        elif named and not self._logged_in:
            status, reason = ConnectionStatus.CONNECTING, "logging in"
        else:
            status = ConnectionStatus.JOINED
            reason = f"logged in as {self.params.name}" if named else "read only: no name"
            lasting = not named
        can_speak = status is ConnectionStatus.JOINED and named
        self.sender.set_speaking(can_speak, reason, lasting=lasting)
        await self._set_status(status, reason)

    def _router_name(self) -> str:
        prefix = self._ctx.name.rpartition("/")[0]
        return f"{prefix}/event-router" if prefix else "event-router"

    def _is_me(self, username: str) -> bool:
        return bool(self.params.name) and username.lower() == self.params.name.lower()

    async def _set_status(
        self, status: ConnectionStatus, reason: str, *, quiet: bool = False
    ) -> None:
        if status is ConnectionStatus.JOINED:
            self._joined_once = True
        if (status, reason) == (self.status, self.status_reason):
            return
        changed = status is not self.status
        self.status, self.status_reason = status, reason
        if changed:
            self.status_since = time.time()
        if changed and not quiet:
            log.info(
                "room %s: %s%s", self.params.channel, status.value, f" ({reason})" if reason else ""
            )
        state = ConnectionState(
            channel=self.params.channel,
            status=status,
            reason=reason,
            can_speak=self.sender.can_speak,
        )
        await self._ctx.bus.publish(f"cytube.{self.params.channel}.state", state)
        router = self._ctx.registry.get(self._router_name())
        if router is not None:
            with contextlib.suppress(ActorStopped):
                await router.send(state)

    # ------------------------------------------------------------------ sending

    async def _serve_requests(self, ctx: ActorContext) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                item = await ctx.mailbox.get()
                nursery.start_soon(self._send_one, ctx, item)

    async def _send_one(self, ctx: ActorContext, item: Any) -> None:
        ask = item if isinstance(item, Ask) else None
        request = item.message if ask is not None else item
        if not isinstance(request, SendChat | SendPrivate):
            if ask is not None:
                ask.fail(TypeError(f"the connection does not handle {type(request).__name__}"))
            return
        progress = [0]  # parts delivered so far
        try:
            parts = await self.deliver(request, progress)
        except CannotSpeak as exc:  # not a delivery failure: not queued for a retry
            self._warnings.warning(
                "not-said", "room %s: not said (%s), correlation %s",
                self.params.channel, exc, request.correlation_id,
            )  # fmt: skip
            if ask is not None:
                ask.fail(exc)
        except SendFailed as exc:
            if request.requeue:
                await self._publish_failure(ctx, request, str(exc), exc.delivered_parts)
            if ask is not None:
                ask.fail(exc)
        except BaseException:
            if ask is not None:
                ask.fail(SendFailed("the connection stopped before delivering"))
            else:  # a told reply: hand it to the next incarnation, or to the retry queue
                try:
                    # what is left of it: parts already delivered are not said twice
                    rest = attrs.evolve(request, delivered_parts=progress[0])
                    handed_back = ctx.mailbox.put_nowait(rest)
                except ActorStopped:
                    handed_back = False
                if not handed_back:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await self._publish_failure(
                            ctx, request, "stopped before delivering", progress[0]
                        )
            raise
        else:
            if ask is not None:
                ask.reply(Delivered(parts=parts))

    async def deliver(
        self, request: SendChat | SendPrivate, progress: list[int] | None = None
    ) -> int:
        """Send every part not yet delivered and wait for its echo; the number of parts.

        Parts before ``request.delivered_parts`` (a retry) are not sent again. A `SendFailed`
        says how many leading parts were delivered by then; so does ``progress[0]`` at every
        moment (for a send that is cancelled).
        """
        to = request.to if isinstance(request, SendPrivate) else None
        return await self.sender.deliver(
            request.msg,
            to=to,
            hold=request.hold,
            skip=request.delivered_parts,
            progress=progress,
        )

    async def _publish_failure(
        self, ctx: ActorContext, request: SendChat | SendPrivate, error: str, delivered: int
    ) -> None:
        say = Say(
            channel=self.params.channel,
            msg=request.msg,
            to=request.to if isinstance(request, SendPrivate) else None,
            connection=ctx.name,
            delivered_parts=delivered,
        )
        self._warnings.warning(
            "send-failed", "room %s: send failed (%s), correlation %s",
            self.params.channel, error, request.correlation_id,
        )  # fmt: skip
        await ctx.bus.publish(
            SEND_FAILED_TOPIC,
            FailureEvent(
                topic=SEND_FAILED_TOPIC,
                source=ctx.name,
                operation="cytube_command",
                event_type=SAY.name,
                error=error,
                error_code="not_delivered",
                retryable=True,
                intent=SAY.intent(say),
                plugin="cytube",
                channel=self.params.channel,
                event_id=request.event_id,
                correlation_id=request.correlation_id,
            ),
        )
