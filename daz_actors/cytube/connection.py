"""The connection actor: one CyTube channel over Socket.IO v4 on trio-websocket.

One incarnation keeps a session going: discovery through ``/socketconfig/<channel>.json``,
the Engine.IO/Socket.IO handshake, ``joinChannel`` and ``login``, answering the server's
pings (a server silent for longer than ping interval + ping timeout is dead), typed events
to the room's event router, and reconnects with the shared backoff (2 s doubling to 5 min,
±25%). It reports ready at once: the room works on while the server is away.

Outgoing chat (`SendChat`/`SendPrivate` asks) is split at 320 characters, paced under the
server's limits by a token bucket, and counts as delivered when the server's echo comes
back. A part that is not echoed in time (throttled, ``cooldown``, ``spamFiltered``, the
connection lost) fails the send: a ``cytube.send.failed`` failure event is published (the
retry queue retries it with the ``cytube_command`` policy) and the asker gets `SendFailed`.
The password is never logged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
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
from daz_actors.cytube.events import (
    ChatMessage,
    ConnectionState,
    ConnectionStatus,
    Delivered,
    ErrorMessage,
    Kicked,
    LoginResult,
    MediaUpdate,
    PrivateMessage,
    SendChat,
    SendPrivate,
    UserList,
)
from daz_actors.cytube.inbound import MalformedEvent, check_event
from daz_actors.cytube.intents import SAY, Say
from daz_actors.cytube.protocol import split_message, to_typed_event
from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.errors import ActorStopped, DazActorsError
from daz_actors.runtime.events import FailureEvent
from daz_actors.runtime.mailbox import Ask, OneShot
from daz_actors.runtime.redaction import register_secret
from daz_actors.runtime.validators import positive

__all__ = ["ConnectionParams", "CytubeConnection", "SendFailed"]

log = logging.getLogger("daz_actors.cytube")

SEND_FAILED_TOPIC = "cytube.send.failed"


class SendFailed(DazActorsError, RuntimeError):
    """A chat message was not delivered (not echoed in time, refused, or not connected).

    `delivered_parts` counts the leading parts of the message that were delivered before
    it failed (set by `deliver`): a retry sends the rest only.
    """

    delivered_parts = 0


class SessionEnded(DazActorsError, ConnectionError):
    """The session with the server ended; the connection reconnects with backoff."""


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
    send_burst: int = attrs.field(default=15, validator=positive)  # server allows 20
    send_rate: float = attrs.field(default=8.0, validator=positive)  # per second; server 10

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

    def resolved_password(self) -> str:
        """The password: the environment variable wins over the config value."""
        password = os.environ.get(self.password_env) or self.password
        register_secret(password)  # never in a log line, whatever logs it
        return password


@attrs.define
class _Pending:
    """A part waiting for its echo."""

    text: str
    done: OneShot


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
                host, port, ssl_context=ssl.create_default_context()
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


class _Bucket:
    """A token bucket pacing our own chat under the server's limit."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.updated = trio.current_time()

    async def take(self) -> None:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            await trio.sleep((1 - self.tokens) / self.rate)
            self.tokens, self.updated = 1.0, trio.current_time()
        self.tokens -= 1


class CytubeConnection:
    """A `Startable` holding one channel's connection; state survives incarnations."""

    def __init__(self, params: ConnectionParams) -> None:
        self.params = params
        self.status = ConnectionStatus.DISCONNECTED
        self.reconnects = 0  # sessions started after the first
        self.last_media_update: float | None = None  # trio time of the last mediaUpdate
        self.received = 0  # typed events received
        self.sent = 0  # parts delivered
        self.delays: list[float] = []  # reconnect waits so far (for checks and health)
        self.rejected: collections.Counter[tuple[str, str]] = collections.Counter()
        # (event, reason) -> events dropped at the protocol boundary (see cytube/inbound.py)
        self.flagged: collections.Counter[tuple[str, str]] = collections.Counter()
        # (event, flag) -> events stored changed: text replaced or cut, time replaced
        self._ws: Any = None
        self._pending: collections.deque[_Pending] = collections.deque()
        self._joined_users = False
        self._joined_once = False

    # ------------------------------------------------------------------ running

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._ctx = ctx
        self._bucket = _Bucket(self.params.send_burst, self.params.send_rate)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_requests, ctx)
            task_status.started()
            await self._keep_connected(ctx)

    async def _keep_connected(self, ctx: ActorContext) -> None:
        backoff = self.params.backoff()
        attempt = 0
        previous: float | None = None
        while True:
            self._joined_once = False
            reason = "the server closed the session"
            try:
                await self._session(ctx)
            except* _SESSION_ERRORS as group:
                error = _first_leaf(group)
                reason = f"{type(error).__name__}: {error}"
                if isinstance(error, FrameError):  # a malformed frame: counted, then reconnect
                    self.rejected[("frame", "frame_error")] += 1
            finally:
                self._ws = None
                self._fail_pending("the connection was lost")
            joined = self._joined_once
            if joined:
                attempt = 0
            delay = backoff.delay(attempt, previous=previous)
            previous = delay
            attempt += 1
            self.delays.append(delay)
            await self._set_status(ConnectionStatus.DISCONNECTED, reason)
            log.warning(
                "%s: disconnected (%s); reconnecting in %.1f s", self.params.channel, reason, delay
            )
            await trio.sleep(delay)
            self.reconnects += 1

    async def _discover(self) -> str:
        """The websocket URL of the channel's server, from /socketconfig/<channel>.json."""
        url = f"{self.params.server.rstrip('/')}/socketconfig/{self.params.channel}.json"
        async with httpx.AsyncClient(timeout=self.params.connect_timeout) as client:
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
        await self._set_status(ConnectionStatus.CONNECTING, "")
        with trio.fail_after(self.params.connect_timeout):
            ws_url = await self._discover()
        async with _open_websocket(ws_url, self.params.connect_timeout) as ws:
            await self._run_session(ctx, ws)

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
        self._joined_users = False
        self.last_media_update = None  # a new session: nothing seen yet
        await ws.send_message(encode_event("joinChannel", {"name": self.params.channel}))
        password = self.params.resolved_password()
        if self.params.name:
            login: dict[str, str] = {"name": self.params.name}
            if password:
                login["pw"] = password
            await ws.send_message(encode_event("login", login))
        else:
            await self._set_status(ConnectionStatus.JOINED, "read only: no name configured")
        while True:
            with trio.move_on_after(silence) as quiet:
                frame = await ws.get_message()
            if quiet.cancelled_caught:
                raise SessionEnded(f"no ping from the server for {silence:g} s: it is dead")
            packet = decode(_text(frame))
            if isinstance(packet, Ping):
                await ws.send_message("3")
            elif isinstance(packet, Event):
                await self._on_event(ctx, packet)
            elif isinstance(packet, Close | Disconnect):
                return

    async def _on_event(self, ctx: ActorContext, packet: Event) -> None:
        """Handle one server event: update the state, forward it to the router."""
        channel = self.params.channel
        try:
            checked = check_event(packet.name, packet.args, received_ms=int(time.time() * 1000))
        except MalformedEvent as exc:
            self.rejected[(exc.event, exc.reason)] += 1
            log.warning("%s: %s event dropped: %s", channel, exc.event, exc.reason)
            return
        for flag in checked.flags:
            self.flagged[(packet.name, flag)] += 1
        event = to_typed_event(channel, packet.name, checked.args, history=not self._joined_users)
        if event is None:
            return
        self.received += 1
        if isinstance(event, UserList):
            self._joined_users = True
        elif isinstance(event, LoginResult):
            if event.success:
                await self._set_status(ConnectionStatus.JOINED, f"logged in as {event.name}")
            else:
                log.error(
                    "%s: login as %r failed: %s (the server drops this bot's chat)",
                    channel, self.params.name, event.error,
                )  # fmt: skip
                await self._set_status(ConnectionStatus.LOGIN_FAILED, event.error or "")
        elif isinstance(event, ChatMessage) and not event.history:
            self._echo(event)
        elif isinstance(event, PrivateMessage) and self._is_me(event.username):
            self._echo_text(event.msg)
        elif isinstance(event, ErrorMessage) and event.kind in ("cooldown", "spamFiltered"):
            self._fail_oldest(f"the server refused the message ({event.kind}: {event.msg})")
        elif isinstance(event, Kicked):
            log.error("%s: kicked: %s", channel, event.reason)
        elif isinstance(event, MediaUpdate):
            self.last_media_update = trio.current_time()
        router = ctx.registry.get(self._router_name())
        if router is not None:
            await router.send(event)
        if isinstance(event, Kicked):
            raise SessionEnded(f"kicked: {event.reason}")

    def _router_name(self) -> str:
        prefix = self._ctx.name.rpartition("/")[0]
        return f"{prefix}/event-router" if prefix else "event-router"

    def _is_me(self, username: str) -> bool:
        return bool(self.params.name) and username.lower() == self.params.name.lower()

    def _echo(self, event: ChatMessage) -> None:
        if self._is_me(event.username):
            self._echo_text(event.msg)

    def _echo_text(self, _text: str) -> None:
        # the server may rewrite text (HTML escaping, filters): echoes are matched in order
        if self._pending:
            self._pending.popleft().done.reply(None)

    def _fail_oldest(self, reason: str) -> None:
        if self._pending:
            self._pending.popleft().done.fail(SendFailed(reason))

    def _fail_pending(self, reason: str) -> None:
        while self._pending:
            self._pending.popleft().done.fail(SendFailed(reason))

    async def _set_status(self, status: ConnectionStatus, reason: str) -> None:
        if status is ConnectionStatus.JOINED:
            self._joined_once = True
        if status is self.status:
            return
        self.status = status
        log.info("%s: %s %s", self.params.channel, status.value, reason)
        topic = f"cytube.{self.params.channel}.state"
        await self._ctx.bus.publish(
            topic, ConnectionState(channel=self.params.channel, status=status, reason=reason)
        )

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
        except SendFailed as exc:
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

        A `SendFailed` says how many leading parts were delivered by then; so does
        ``progress[0]`` at every moment (for a send that is cancelled).
        """
        parts = split_message(request.msg)
        progress = progress if progress is not None else [0]
        progress[0] = min(max(request.delivered_parts, 0), len(parts))
        try:
            for part in parts[progress[0] :]:
                await self._deliver_part(request, part)
                progress[0] += 1
        except SendFailed as exc:
            exc.delivered_parts = progress[0]
            raise
        return len(parts)

    async def _deliver_part(self, request: SendChat | SendPrivate, part: str) -> None:
        """Send one part and wait for its echo; `SendFailed` if it is not delivered."""
        ws = self._ws
        if ws is None or self.status is not ConnectionStatus.JOINED:
            raise SendFailed(f"not joined to {self.params.channel} ({self.status.value})")
        await self._bucket.take()
        pending = _Pending(text=part, done=OneShot())
        self._pending.append(pending)
        if isinstance(request, SendChat):
            frame = encode_event("chatMsg", {"msg": part, "meta": {}})
        else:
            frame = encode_event("pm", {"to": request.to, "msg": part, "meta": {}})
        try:
            await ws.send_message(frame)
        except ConnectionClosed:
            raise SendFailed("the connection closed while sending") from None
        with trio.move_on_after(self.params.echo_timeout) as waited:
            await pending.done.wait()
        if waited.cancelled_caught:
            if pending in self._pending:
                self._pending.remove(pending)
            raise SendFailed(f"no echo within {self.params.echo_timeout:g} s")
        self.sent += 1

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
        log.warning(
            "%s: send failed (%s), correlation %s", self.params.channel, error,
            request.correlation_id,
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
