"""A local CyTube-compatible channel server: a real Socket.IO v4 server (see docs/bot.md).

``daz-actors demo`` runs it as the bot's chat server, and the test suite as its chat peer.
Run it as a script, ``python path/to/daz_actors/cytube/local_server.py --port 0 --port-file F``
(`CytubeServerProcess` does; not with ``-m``, which would import the package and with it
trio-asyncio, whose asyncio patches break uvicorn's websockets); ``--help`` lists the
options. It serves, on one loopback port:

* ``GET /socketconfig/<channel>.json``: ``{"servers":[{"url":"http://HOST:PORT",
  "secure":false}]}`` (a 404 JSON error for a channel outside ``--channel`` when any are
  given);
* Socket.IO v4 at ``/socket.io/`` (python-socketio ``AsyncServer``, asgi, under uvicorn with
  wsproto), behaving as a CyTube 3.x channel (calzoneman/sync): ``rank`` -1 on connect; a
  channel password (``needPassword`` / ``channelPassword`` / ``cancelNeedPassword``, nothing
  of the channel before it is accepted, rank 2 and up pass without it); the ``joinChannel``
  sequence with up to 15 lines of buffered history and ``channelOpts`` (``chat_antiflood``,
  ``chat_antiflood_params``); ``login`` with accounts (global rank 1) or as a guest (rank 0,
  one guest login per IP per ``--guest-login-delay`` seconds), with CyTube's error texts;
  channel ranks (``--channel-rank``): ``addUser`` with the global rank, then ``setUserRank``
  with the channel rank, and ``rank`` to the user; a duplicate login kicks the older socket
  (``Duplicate login``; ``--duplicate-kick false`` keeps it, to test a client with a stale
  session); ``chatMsg`` HTML-escaped, links made ``<a>`` tags, cut at 320
  characters, echoed to everyone; one rate limiter per socket shared by chat and PMs
  (``newRateLimiter``: burst 20, 10/s, or the anti-flood parameters below rank 2) answering
  ``cooldown`` with the bare number 1000 / sustained; ``spamFiltered`` for
  ``--new-account`` names, ``pm`` delivered and echoed, ``addUser`` / ``userLeave`` /
  ``usercount``, ``changeMedia`` and a periodic ``mediaUpdate``, and a per-IP connection
  budget (5, one more every 10 s) refusing the Socket.IO connect with
  ``44{"message":"Rate limit exceeded"}``;
* a record of who is in each channel: every logged-in session entering or leaving a
  channel (``presence``), and every moment a second session of the same account entered a
  channel its first one had not left yet (``overlaps``: what a cluster of bots sharing an
  account must never cause; CyTube then kicks the older one for ``Duplicate login``);
* a JSON control API under ``/_control/`` (``GET state``; ``POST say``, ``pm``, ``kick``,
  ``media``, ``add_user``, ``remove_user``, ``add_account``, ``reset_budget``, ``set_rank``,
  ``set_password``, ``set_opts``, ``burn_limiter``, ``spam_filter``) for tests.

A dead server is simulated from outside, by stopping the process with SIGSTOP: the kernel
keeps the TCP connection open while no frame (and no ping) comes, as with a hung server.

Everything is in one module that imports nothing else of daz-actors, so the server process
is independent of the bot it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
import uvicorn

HISTORY_LINES = 15  # chat lines CyTube replays to a socket that joins
RECORDS_KEPT = 10_000  # chat lines, PMs, logins and kicks kept for the control API's state
CHANNEL_NAME = re.compile(r"^[\w-]{1,30}$")
BAD_LOGIN = "Invalid username/password combination"
BAD_NAME = (
    "Invalid username.  Usernames must be 1-20 characters long and consist only of "
    "characters a-z, A-Z, 0-9, -, or _."
)
NAME_REGISTERED = "That username is registered."
NAME_IN_USE = "That name is already in use on this channel."
CONTROL = re.compile(r"[\x00-\x1f]+")  # chat.js: runs of control characters become a space
USER_NAME = re.compile(r"^[\w-]{1,20}$")
# chat.js: links in a line (after escaping) become <a> tags (enable_link_regex)
LINK = re.compile(r"(\w+://(?:[^:/\[\]\s]+|\[[0-9a-f:]+\])(?::\d+)?(?:/[^/\s]*)*)", re.I)
MIN_ANTIFLOOD = {"burst": 20, "sustained": 10}  # chat.js: everyone, and every PM
ANTIFLOOD_PARAMS = {"burst": 4, "sustained": 1, "cooldown": 4}  # opts.js defaults
DEFAULT_MEDIA = {"id": "dQw4w9WgXcQ", "title": "Test video", "type": "yt", "seconds": 212}

Json = dict[str, Any]


def now_ms() -> int:
    """Wall-clock milliseconds, the ``time`` field of CyTube's chat lines."""
    return int(time.time() * 1000)


def duration(seconds: int) -> str:
    """CyTube's ``HH:MM:SS`` / ``MM:SS`` rendering of a media length."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02}:{minutes:02}:{secs:02}" if hours else f"{minutes:02}:{secs:02}"


def guest_delay_error(seconds: float) -> str:
    """user.js's refusal of a second guest login from one IP within the delay."""
    return f"Guest logins are restricted to one per IP address per {seconds:g} seconds."


def sanitize_text(msg: str) -> str:
    """xss.js ``sanitizeText``: what CyTube does to every chat line first."""
    return (
        msg.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
        .replace("(", "&#40;")
        .replace(")", "&#41;")
    )


def format_chat(msg: str) -> str:
    """chat.js ``formatMessage``: escaped, then links as ``<a>`` tags."""
    escaped = sanitize_text(msg)
    return LINK.sub(lambda m: f'<a href="{m[1]}" target="_blank">{m[1]}</a>', escaped)


class RateLimiter:
    """utilities.js ``newRateLimiter``: one per user, shared by chat and PMs; exact."""

    def __init__(self) -> None:
        self.count = 0
        self.last_time = 0  # ms

    def throttle(self, opts: Json, now: int | None = None) -> bool:
        """True when the line is refused (`now`: ms, the wall clock by default)."""
        burst = float(opts.get("burst", 10))
        sustained = float(opts.get("sustained", 2))
        cooldown = float(opts["cooldown"]) if "cooldown" in opts else burst / sustained
        now = now_ms() if now is None else now
        if self.last_time < now - cooldown * 1000:  # cooled down: allow, clear the count
            self.count = 1
            self.last_time = now
            return False
        if self.count < burst:
            self.count += 1
            self.last_time = now
            return False
        if now - self.last_time < 1000 / sustained:
            return True
        self.last_time = now
        return False


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` a second."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_ms(self) -> int:
        """Milliseconds until the next token (at least 1)."""
        self._refill()
        if self.rate <= 0:
            return 2**31 - 1
        return max(1, int((1 - self.tokens) / self.rate * 1000 + 0.999))


@dataclass
class Options:
    """The server's settings; every one is a command-line option."""

    host: str = "127.0.0.1"
    port: int = 0
    port_file: str | None = None
    parent_pid: int | None = None  # exit once this process is gone (default: the parent)
    ping_interval: int = 25  # seconds; Engine.IO announces whole seconds
    ping_timeout: float = 120.0  # seconds
    max_payload: int = 1_048_576  # bytes, as CyTube announces
    conn_burst: int = 5  # Socket.IO connects per IP ...
    conn_refill: float = 10.0  # ... one more every this many seconds
    max_open_per_ip: int = 0  # open connections per IP before a kick; 0: no limit
    chat_burst: int = 20  # the minimum limiter (MIN_ANTIFLOOD): everyone, every PM
    chat_rate: float = 10.0  # messages a second after the burst
    antiflood: bool = False  # channel option chat_antiflood of new channels
    # CyTube kicks the older session of an account that joins a channel again; off only to
    # test a client that must behave with a stale session still open (recorded as overlap)
    duplicate_kick: bool = True
    antiflood_params: Json = field(default_factory=lambda: dict(ANTIFLOOD_PARAMS))
    guest_login_delay: float = 60.0  # seconds between guest logins from one IP; 0: none
    channel_passwords: dict[str, str] = field(default_factory=dict)  # channel -> password
    channel_ranks: dict[str, int] = field(default_factory=dict)  # name -> rank in channels
    max_chat_len: int = 320
    media: Json | None = field(default_factory=lambda: dict(DEFAULT_MEDIA))
    media_update_interval: float = 5.0  # seconds between mediaUpdate; 0: never
    motd: str = "Welcome to the test channel"
    channels: list[str] = field(default_factory=list)  # allowlist; empty: any channel
    accounts: dict[str, str] = field(default_factory=dict)  # name -> password
    new_accounts: set[str] = field(default_factory=set)  # their chat is spamFiltered


@dataclass
class Session:
    """One connected socket."""

    sid: str
    ip: str
    limiter: RateLimiter = field(default_factory=RateLimiter)  # chat and PMs
    channel: str | None = None
    joining: str | None = None  # the channel it waits to be let into (password)
    name: str | None = None
    global_rank: int = -1
    rank: int = -1  # effective: max(global, channel)
    logged_in: bool = False
    guest: bool = False
    login_failed: bool = False

    def describe(self) -> Json:
        return {
            "sid": self.sid,
            "ip": self.ip,
            "channel": self.channel,
            "joining": self.joining,
            "name": self.name,
            "rank": self.rank,
            "logged_in": self.logged_in,
            "guest": self.guest,
            "login_failed": self.login_failed,
        }


@dataclass
class Channel:
    """One channel's state."""

    name: str
    history: deque[Json] = field(default_factory=lambda: deque(maxlen=HISTORY_LINES))
    fake_users: dict[str, int] = field(default_factory=dict)  # name -> effective rank
    ranks: dict[str, int] = field(default_factory=dict)  # lower-case name -> channel rank
    password: str | None = None
    opts: Json = field(default_factory=dict)
    media: Json | None = None
    media_origin: float = 0.0  # monotonic time at which the media was at 0 s
    paused: bool = False
    paused_at: float = 0.0  # position while paused

    def current_time(self) -> float:
        if self.media is None:
            return 0.0
        if self.paused:
            return self.paused_at
        position = time.monotonic() - self.media_origin
        seconds = self.media.get("seconds") or 0
        return round(position % seconds if seconds > 0 else position, 3)

    def set_media(
        self, media: Json | None, current_time: float = 0.0, paused: bool = False
    ) -> None:
        self.media = media
        self.paused = paused
        self.paused_at = current_time
        self.media_origin = time.monotonic() - current_time


def user_entry(name: str, rank: int) -> Json:
    """One ``userlist`` / ``addUser`` entry."""
    return {
        "name": name,
        "rank": rank,
        "profile": {"image": "", "text": ""},
        "meta": {"afk": False, "muted": False, "smuted": False, "aliases": []},
    }


class PeerServer(socketio.AsyncServer):  # type: ignore[misc]
    """``AsyncServer`` that runs a hook once a namespace connect has been accepted.

    CyTube emits ``rank`` right after ``40{"sid":...}``; an emit inside the ``connect``
    handler would go out before the ``40`` answer, so the hook runs after it.
    """

    after_connect: Callable[[str], Awaitable[None]] | None = None

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        connected = sid is not None and self.manager.is_connected(sid, namespace or "/")
        if connected and self.after_connect is not None:
            await self.after_connect(sid)


class CytubePeer:
    """The channel logic, the Socket.IO handlers and the HTTP routes."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.port = options.port
        self.sio = PeerServer(
            async_mode="asgi",
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            max_http_buffer_size=options.max_payload,
            cors_allowed_origins="*",
            transports=["websocket", "polling"],
            logger=False,
            engineio_logger=False,
        )
        self.sio.after_connect = self._after_connect
        self.accounts = dict(options.accounts)
        self.sessions: dict[str, Session] = {}
        self.channels: dict[str, Channel] = {}
        self.conn_buckets: dict[str, TokenBucket] = {}
        self.connect_attempts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        # what the control API's state reports; bounded, so a long run stays small
        self.chat_received: deque[Json] = deque(maxlen=RECORDS_KEPT)
        self.pm_received: deque[Json] = deque(maxlen=RECORDS_KEPT)
        self.logins: deque[Json] = deque(maxlen=RECORDS_KEPT)
        self.kicks: deque[Json] = deque(maxlen=RECORDS_KEPT)
        # logged-in sessions entering ("join") and leaving ("leave") channels, in order
        self.presence: deque[Json] = deque(maxlen=RECORDS_KEPT)
        # a session of an account entered a channel where another of its sessions still was
        self.overlaps: deque[Json] = deque(maxlen=RECORDS_KEPT)
        self.started = time.time()
        self.guest_logins: dict[str, float] = {}  # ip -> monotonic time of its last guest login
        events = ("connect", "disconnect", "joinChannel", "channelPassword", "login", "chatMsg")
        for event in (*events, "pm"):
            self.sio.on(event, getattr(self, "on_" + event))
        self.app = socketio.ASGIApp(
            self.sio,
            other_asgi_app=self.http_app,
            socketio_path="socket.io",
            on_startup=self._startup,
        )

    # -- helpers --
    def channel(self, name: str) -> Channel:
        if name not in self.channels:
            chan = Channel(name)
            if self.options.media is not None:
                chan.set_media(dict(self.options.media))
            chan.password = self.options.channel_passwords.get(name)
            chan.ranks = {n.lower(): r for n, r in self.options.channel_ranks.items()}
            chan.opts = {
                "allow_voteskip": True,
                "pagetitle": name,
                "chat_antiflood": self.options.antiflood,
                "chat_antiflood_params": dict(self.options.antiflood_params),
            }
            self.channels[name] = chan
        return self.channels[name]

    def channel_opts(self, chan: Channel) -> Json:
        """The ``channelOpts`` payload (opts.js ``sendOpts``)."""
        return dict(chan.opts)

    def members(self, channel: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.channel == channel]

    def users(self, channel: str) -> list[Json]:
        """The channel's user list: logged-in sockets, then fake users."""
        entries = [
            user_entry(s.name, s.rank)
            for s in self.members(channel)
            if s.logged_in and s.name is not None
        ]
        chan = self.channel(channel)
        entries += [user_entry(name, rank) for name, rank in chan.fake_users.items()]
        return entries

    def usercount(self, channel: str) -> int:
        return len(self.members(channel)) + len(self.channel(channel).fake_users)

    def name_taken(self, channel: str | None, name: str, exclude: str | None = None) -> bool:
        lname = name.lower()
        if channel is not None and lname in (n.lower() for n in self.channel(channel).fake_users):
            return True
        return any(
            s.logged_in and s.name is not None and s.name.lower() == lname and s.sid != exclude
            for s in self.sessions.values()
            if channel is None or s.channel == channel
        )

    def change_media_payload(self, chan: Channel) -> Json:
        media = dict(chan.media or {})
        seconds = int(media.get("seconds") or 0)
        return {
            "id": media.get("id", ""),
            "title": media.get("title", ""),
            "seconds": seconds,
            "duration": duration(seconds),
            "type": media.get("type", "yt"),
            "meta": media.get("meta", {}),
            "currentTime": chan.current_time(),
            "paused": chan.paused,
        }

    async def emit(self, event: str, data: Any, **where: Any) -> None:
        await self.sio.emit(event, data, **where)

    async def broadcast_chat(
        self, channel: str, username: str, msg: str, meta: Json, at: int | None = None
    ) -> Json:
        line = {"username": username, "msg": msg, "meta": meta, "time": at or now_ms()}
        self.channel(channel).history.append(line)
        await self.emit("chatMsg", line, room=channel)
        return line

    async def kick(self, sid: str, reason: str) -> None:
        """Emit ``kick`` then disconnect the socket, websocket included (``disconnect(true)``)."""
        session = self.sessions.get(sid)
        self.kicks.append({"sid": sid, "name": session and session.name, "reason": reason})
        await self.emit("kick", {"reason": reason}, to=sid)
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        await self.sio.disconnect(sid)
        if eio_sid is None:
            return
        eio_socket = self.sio.eio.sockets.get(eio_sid)
        await self.sio.eio.disconnect(eio_sid)
        if eio_socket is not None:
            # Wake the websocket writer so it closes the websocket now, not after a ping cycle.
            eio_socket.queue.put_nowait(None)

    def record_arrival(self, session: Session) -> None:
        """A logged-in session is now in its channel: note it, and any older session of
        the same account still there (an overlap)."""
        assert session.channel is not None
        assert session.name is not None
        at = now_ms()
        others = [
            other.sid
            for other in self.members(session.channel)
            if other.sid != session.sid
            and other.logged_in
            and other.name is not None
            and other.name.lower() == session.name.lower()
        ]
        entry = {"event": "join", "channel": session.channel, "name": session.name}
        self.presence.append({**entry, "sid": session.sid, "time": at})
        if others:
            self.overlaps.append(
                {"channel": session.channel, "name": session.name, "sid": session.sid,
                 "others": others, "time": at}
            )  # fmt: skip

    async def kick_duplicates(self, session: Session) -> None:
        """CyTube kicks an older socket of the same account when it joins again."""
        if session.channel is None or not session.logged_in or session.name is None:
            return
        self.record_arrival(session)
        if not self.options.duplicate_kick:
            return
        for other in self.members(session.channel):
            if (
                other.sid != session.sid
                and other.logged_in
                and other.name is not None
                and other.name.lower() == session.name.lower()
            ):
                await self.kick(other.sid, "Duplicate login")

    # -- Socket.IO handlers --
    async def on_connect(self, sid: str, environ: Json, auth: Any = None) -> None:
        client = environ.get("asgi.scope", {}).get("client") or ("unknown", 0)
        ip = str(client[0])
        self.connect_attempts[ip] += 1
        bucket = self.conn_buckets.get(ip)
        if bucket is None:
            bucket = TokenBucket(self.options.conn_burst, 1 / self.options.conn_refill)
            self.conn_buckets[ip] = bucket
        if not bucket.take():
            self.refused[ip] += 1
            raise socketio.exceptions.ConnectionRefusedError("Rate limit exceeded")
        self.sessions[sid] = Session(sid, ip)

    async def _after_connect(self, sid: str) -> None:
        session = self.sessions.get(sid)
        if session is None:
            return
        await self.emit("rank", -1, to=sid)
        limit = self.options.max_open_per_ip
        if limit and sum(s.ip == session.ip for s in self.sessions.values()) > limit:
            await self.kick(sid, "Too many connections from your IP address")

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.pop(sid, None)
        if session is None or session.channel is None:
            return
        channel = session.channel
        if session.logged_in:
            self.presence.append(
                {"event": "leave", "channel": channel, "name": session.name, "sid": sid,
                 "time": now_ms()}
            )  # fmt: skip
        await self.sio.leave_room(sid, channel)
        if session.logged_in and not self.name_taken(channel, session.name or ""):
            await self.emit("userLeave", {"name": session.name}, room=channel)
        await self.emit("usercount", self.usercount(channel), room=channel)

    def channel_rank(self, channel: str, name: str | None) -> int:
        """The rank an account holds in `channel` (0 when none)."""
        return self.channel(channel).ranks.get((name or "").lower(), 0)

    def _effective(self, session: Session, channel: str) -> int:
        if not session.logged_in or session.guest:
            return session.global_rank
        return max(session.global_rank, self.channel_rank(channel, session.name))

    async def on_joinChannel(self, sid: str, data: Any) -> None:  # noqa: N802 (CyTube's name)
        session = self.sessions.get(sid)
        name = data.get("name") if isinstance(data, dict) else None
        if session is None or session.channel or session.joining or not isinstance(name, str):
            return
        if not CHANNEL_NAME.match(name):
            await self.emit("errorMsg", {"msg": "Invalid channel name"}, to=sid)
            return
        if self.options.channels and name not in self.options.channels:
            await self.emit("errorMsg", {"msg": f"Channel {name} does not exist"}, to=sid)
            return
        chan = self.channel(name)
        pw = data.get("pw")
        if chan.password is not None and pw != chan.password:
            # accesscontrol.js: rank 2 and up pass; others wait for the right password
            if session.logged_in and self._effective(session, name) >= 2:
                await self.emit("cancelNeedPassword", None, to=sid)
            else:
                session.joining = name
                await self.emit("needPassword", pw is not None, to=sid)
                return
        await self.accept(session, name)

    async def on_channelPassword(self, sid: str, pw: Any) -> None:  # noqa: N802 (CyTube's name)
        session = self.sessions.get(sid)
        if session is None or session.joining is None:
            return
        chan = self.channel(session.joining)
        if pw != chan.password:
            await self.emit("needPassword", True, to=sid)
            return
        await self.emit("cancelNeedPassword", None, to=sid)
        name, session.joining = session.joining, None
        await self.accept(session, name)

    async def accept(self, session: Session, name: str) -> None:
        """channel.js ``joinUser`` / ``acceptUser``: let the socket into the channel."""
        sid = session.sid
        chan = self.channel(name)
        session.channel = name
        if session.logged_in:
            effective = self._effective(session, name)
            if effective != session.rank:
                session.rank = effective
                await self.emit("rank", effective, to=sid)
        await self.kick_duplicates(session)
        # into the room first, then the replay (channel.js acceptUser: socket.join, then
        # onUserPostJoin sends the chat buffer): a line said while the frames below go out
        # (each emit awaits) reaches this socket live, or is in the replay; never neither
        await self.sio.enter_room(sid, name)
        frames: list[tuple[str, Any]] = [
            ("setPermissions", {"chat": 0, "seeplaylist": -1, "playlistadd": 1}),
            ("setPlaylistLocked", True),
            ("emoteList", []),
            *(("chatMsg", dict(line)) for line in chan.history),
            ("setMotd", self.options.motd),
            ("channelOpts", self.channel_opts(chan)),
            ("playlist", []),
            ("userlist", self.users(name)),
            ("usercount", self.usercount(name)),
        ]
        if chan.media is not None:
            frames.append(("changeMedia", self.change_media_payload(chan)))
        for event, payload in frames:
            await self.emit(event, payload, to=sid)
        if session.logged_in:
            await self.announce(session, name, skip_sid=sid)
        await self.emit("usercount", self.usercount(name), room=name, skip_sid=sid)

    async def announce(self, session: Session, channel: str, **where: Any) -> None:
        """``addUser`` with the global rank, then ``setUserRank`` with the channel rank."""
        name = session.name or ""
        await self.emit("addUser", user_entry(name, session.global_rank), room=channel, **where)
        if session.rank != session.global_rank:
            update = {"name": name, "rank": session.rank}
            await self.emit("setUserRank", update, room=channel)

    async def on_login(self, sid: str, data: Any) -> None:
        session = self.sessions.get(sid)
        if session is None or session.logged_in or not isinstance(data, dict):
            return
        name, pw = data.get("name"), data.get("pw")
        if not isinstance(name, str):
            return
        record: Json = {"sid": sid, "name": name, "time": now_ms()}
        error = None
        channel = session.channel or session.joining
        if pw:  # user.js login
            account = next((a for a in self.accounts if a.lower() == name.lower()), None)
            if account is None or self.accounts[account] != pw:
                error = BAD_LOGIN
            else:
                name, session.global_rank, session.guest = account, 1, False
        else:  # user.js guestLogin
            last = self.guest_logins.get(session.ip)
            delay = self.options.guest_login_delay
            if last is not None and delay > 0 and time.monotonic() - last < delay:
                error = guest_delay_error(delay)
            elif not USER_NAME.match(name):
                error = BAD_NAME
            elif any(a.lower() == name.lower() for a in self.accounts):
                error = NAME_REGISTERED
            elif session.channel is not None and self.name_taken(session.channel, name, sid):
                error = NAME_IN_USE
            else:
                session.global_rank, session.guest = 0, True
                self.guest_logins[session.ip] = time.monotonic()
        self.logins.append({**record, "success": error is None, "error": error})
        if error is not None:
            session.login_failed = True
            await self.emit("login", {"success": False, "error": error}, to=sid)
            return
        session.name, session.logged_in, session.login_failed = name, True, False
        session.rank = session.global_rank
        await self.emit("rank", session.rank, to=sid)
        reply: Json = {"success": True, "name": name}
        if session.guest:
            reply["guest"] = True
        await self.emit("login", reply, to=sid)
        if session.joining is not None and self._effective(session, session.joining) >= 2:
            await self.emit("cancelNeedPassword", None, to=sid)  # let in by rank
            joining, session.joining = session.joining, None
            await self.accept(session, joining)
            return
        if channel is not None and session.channel is not None:
            effective = self._effective(session, channel)
            if effective != session.rank:
                session.rank = effective
                await self.emit("rank", effective, to=sid)
            await self.kick_duplicates(session)
            await self.announce(session, channel)

    def _chat_args(self, data: Any) -> tuple[str | None, Json]:
        if not isinstance(data, dict) or not isinstance(data.get("msg"), str):
            return None, {}
        meta = data.get("meta")
        return data["msg"], meta if isinstance(meta, dict) else {}

    def min_antiflood(self) -> Json:
        return {"burst": self.options.chat_burst, "sustained": self.options.chat_rate}

    async def _may_send(
        self, session: Session, record: Json, log: deque[Json], antiflood: Json
    ) -> bool:
        """Login, emptiness, rate and spam checks shared by chat and PM; record the outcome."""
        log.append(record)
        if not session.logged_in:
            record["outcome"] = "not_logged_in"  # silently dropped, as CyTube does
            return False
        if not record["msg"].strip():
            record["outcome"] = "empty"
            return False
        if session.limiter.throttle(antiflood):
            record["outcome"] = "throttled"
            await self.emit("cooldown", 1000 / float(antiflood["sustained"]), to=session.sid)
            return False
        if session.name in self.options.new_accounts:
            record["outcome"] = "spam_filtered"
            await self.emit("spamFiltered", {"reason": "NEW_USER_CHAT"}, to=session.sid)
            return False
        return True

    async def on_chatMsg(self, sid: str, data: Any) -> None:  # noqa: N802 (CyTube's name)
        session = self.sessions.get(sid)
        msg, meta = self._chat_args(data)
        if session is None or session.channel is None or msg is None:
            return
        msg = CONTROL.sub(" ", msg[: self.options.max_chat_len])
        record = {
            "channel": session.channel,
            "sid": sid,
            "username": session.name,
            "msg": msg,
            "time": now_ms(),
        }
        chan = self.channel(session.channel)
        antiflood = self.min_antiflood()
        if chan.opts.get("chat_antiflood") and session.rank < 2:  # chat.js processChatMsg
            antiflood = dict(chan.opts.get("chat_antiflood_params") or ANTIFLOOD_PARAMS)
        if await self._may_send(session, record, self.chat_received, antiflood):
            record["outcome"] = "broadcast"
            await self.broadcast_chat(session.channel, session.name or "", format_chat(msg), meta)

    async def on_pm(self, sid: str, data: Any) -> None:
        """chat.js ``handlePm``, in its order: signed in, not to oneself, a valid name, the
        minimum rate limit, the recipient in this channel. No emptiness check and no
        new-account spam filter (those belong to channel chat), as on the real server."""
        session = self.sessions.get(sid)
        msg, meta = self._chat_args(data)
        to = data.get("to") if isinstance(data, dict) else None
        if session is None or session.channel is None or msg is None or not isinstance(to, str):
            return
        msg = msg[: self.options.max_chat_len]
        record = {
            "channel": session.channel,
            "sid": sid,
            "username": session.name,
            "to": to,
            "msg": msg,
            "time": now_ms(),
        }
        self.pm_received.append(record)
        refusal: tuple[str, str] | None = None
        if not session.logged_in:
            refusal = ("not_logged_in", "You must be signed in to send PMs")
        elif session.name is not None and to.lower() == session.name.lower():
            refusal = ("self", "You can't PM yourself!")
        elif not USER_NAME.match(to):
            refusal = ("invalid_name", f"PM failed: {to.lower()} isn't a valid username.")
        if refusal is not None:
            record["outcome"] = refusal[0]
            await self.emit("errorMsg", {"msg": refusal[1]}, to=sid)
            return
        antiflood = self.min_antiflood()
        if session.limiter.throttle(antiflood):
            record["outcome"] = "throttled"
            await self.emit("cooldown", 1000 / float(antiflood["sustained"]), to=sid)
            return
        chan = self.channel(session.channel)
        targets = [
            s
            for s in self.members(session.channel)
            if s.logged_in and s.name is not None and s.name.lower() == to.lower()
        ]
        fake = next((n for n in chan.fake_users if n.lower() == to.lower()), None)
        if not targets and fake is None:
            record["outcome"] = "no_such_user"
            message = f"PM failed: {to.lower()} isn't connected to this channel."
            await self.emit("errorMsg", {"msg": message}, to=sid)
            return
        record["outcome"] = "delivered"
        recipient = targets[0].name if targets else fake
        line = {
            "username": session.name,
            "to": recipient,
            "msg": format_chat(msg),
            "meta": meta,
            "time": now_ms(),
        }
        for target in targets:
            if target.sid != sid:
                await self.emit("pm", line, to=target.sid)
        await self.emit("pm", line, to=sid)

    # -- background: mediaUpdate --
    async def _startup(self) -> None:
        if self.options.media_update_interval > 0:
            self.sio.start_background_task(self._media_updates)
        if self.options.parent_pid is not None:
            self.sio.start_background_task(self._exit_with_parent, self.options.parent_pid)

    async def _exit_with_parent(self, parent: int) -> None:
        """Stop (SIGTERM to ourselves) once `parent` is gone, so a killed demo or test run
        leaves no server behind."""
        while True:  # nothing to wait on: a process learns of its parent's end by polling
            await asyncio.sleep(1.0)  # how soon an orphaned server notices
            if not _alive(parent):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    async def _media_updates(self) -> None:
        while True:
            await asyncio.sleep(self.options.media_update_interval)
            for chan in list(self.channels.values()):
                if chan.media is not None and self.members(chan.name):
                    update = {"currentTime": chan.current_time(), "paused": chan.paused}
                    await self.emit("mediaUpdate", update, room=chan.name)

    # -- HTTP: discovery and control --
    async def http_app(self, scope: Json, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = await self.route(scope["method"], scope["path"], body)
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and (m := re.fullmatch(r"/socketconfig/([^/]+)\.json", path)):
            channel = m.group(1)
            if self.options.channels and channel not in self.options.channels:
                return 404, {"error": f"Channel {channel} not found"}
            url = f"http://{self.options.host}:{self.port}"
            return 200, {"servers": [{"url": url, "secure": False}]}
        if method == "GET" and path == "/_control/state":
            return 200, self.state()
        if method == "POST" and path.startswith("/_control/"):
            action = getattr(self, "control_" + path.removeprefix("/_control/"), None)
            if action is None:
                return 404, {"error": f"no control action {path}"}
            try:
                args = json.loads(body or b"{}")
                if not isinstance(args, dict):
                    raise TypeError("the body must be a JSON object")
                return 200, await action(**args)
            except (TypeError, ValueError, KeyError) as exc:
                return 400, {"error": f"{type(exc).__name__}: {exc}"}
        return 404, {"error": f"not found: {method} {path}"}

    def state(self) -> Json:
        open_per_ip = Counter(s.ip for s in self.sessions.values())
        return {
            "port": self.port,
            "pid": os.getpid(),
            "started": self.started,
            "options": {
                "ping_interval": self.options.ping_interval,
                "ping_timeout": self.options.ping_timeout,
                "conn_burst": self.options.conn_burst,
                "conn_refill": self.options.conn_refill,
                "chat_burst": self.options.chat_burst,
                "chat_rate": self.options.chat_rate,
                "antiflood": self.options.antiflood,
                "duplicate_kick": self.options.duplicate_kick,
                "guest_login_delay": self.options.guest_login_delay,
                "media_update_interval": self.options.media_update_interval,
            },
            "accounts": sorted(self.accounts),
            "connections": dict(open_per_ip),
            "connect_attempts": dict(self.connect_attempts),
            "refused": dict(self.refused),
            "sessions": [s.describe() for s in self.sessions.values()],
            "channels": {
                name: {
                    "users": [u["name"] for u in self.users(name)],
                    "fake_users": dict(chan.fake_users),
                    "ranks": dict(chan.ranks),
                    "opts": self.channel_opts(chan),
                    "usercount": self.usercount(name),
                    "history": list(chan.history),
                    "media": self.change_media_payload(chan) if chan.media else None,
                }
                for name, chan in self.channels.items()
            },
            "chat_received": list(self.chat_received),
            "pm_received": list(self.pm_received),
            "logins": list(self.logins),
            "kicks": list(self.kicks),
            "presence": list(self.presence),
            "overlaps": list(self.overlaps),
        }

    async def control_say(
        self,
        channel: str,
        username: str,
        msg: str,
        meta: Json | None = None,
        time: int | None = None,
    ) -> Json:
        """Inject a chat line typed by ``username`` (no login or rate limit): escaped and
        filtered as the server does, broadcast, kept in the history. ``time`` (ms) stands in
        for the server's clock (two lines in one millisecond)."""
        self.channel(channel)
        text = format_chat(CONTROL.sub(" ", msg[: self.options.max_chat_len]))
        line = await self.broadcast_chat(channel, username, text, meta or {}, time)
        return {"line": line, "recipients": len(self.members(channel))}

    async def control_pm(
        self, channel: str, to: str, msg: str, username: str = "someone", meta: Json | None = None
    ) -> Json:
        """Deliver a PM from ``username`` to every socket logged in as ``to`` in ``channel``."""
        line = {
            "username": username,
            "to": to,
            "msg": msg[: self.options.max_chat_len],
            "meta": meta or {},
            "time": now_ms(),
        }
        targets = [s for s in self.members(channel) if s.logged_in and s.name == to]
        for target in targets:
            await self.emit("pm", line, to=target.sid)
        return {"delivered": len(targets), "line": line}

    async def control_kick(
        self, channel: str, name: str | None = None, reason: str = "Kicked", sid: str | None = None
    ) -> Json:
        """Kick sockets in ``channel`` by user name, by sid, or (neither given) all of them."""
        targets = [
            s.sid
            for s in self.members(channel)
            if (name is None or (s.name or "").lower() == name.lower())
            and (sid is None or s.sid == sid)
        ]
        for target in targets:
            await self.kick(target, reason)
        return {"kicked": len(targets)}

    async def control_media(
        self,
        channel: str,
        media: Json | None = None,
        current_time: float = 0.0,
        paused: bool = False,
    ) -> Json:
        """Play ``media`` ({id, title, type, seconds}) in ``channel``, or stop with null."""
        chan = self.channel(channel)
        if media is not None and not isinstance(media, dict):
            raise TypeError("media must be an object or null")
        chan.set_media(dict(media) if media else None, current_time, paused)
        if chan.media is not None:
            await self.emit("changeMedia", self.change_media_payload(chan), room=channel)
        return {"media": self.change_media_payload(chan) if chan.media else None}

    async def control_add_user(
        self, channel: str, name: str, rank: int = 0, channel_rank: int | None = None
    ) -> Json:
        """Add a fake user of global `rank`: ``addUser``, then ``setUserRank`` when its
        `channel_rank` (kept for its rejoins) is higher, and ``usercount``."""
        chan = self.channel(channel)
        if channel_rank is not None:
            chan.ranks[name.lower()] = channel_rank
        effective = max(rank, chan.ranks.get(name.lower(), 0)) if rank > 0 else rank
        chan.fake_users[name] = effective
        await self.emit("addUser", user_entry(name, rank), room=channel)
        if effective != rank:
            await self.emit("setUserRank", {"name": name, "rank": effective}, room=channel)
        await self.emit("usercount", self.usercount(channel), room=channel)
        return {"usercount": self.usercount(channel)}

    async def control_set_rank(self, channel: str, name: str, rank: int) -> Json:
        """Promote or demote `name` in `channel` (ranks.js): ``rank`` to its sockets,
        ``setUserRank`` to the channel; kept for its rejoins."""
        chan = self.channel(channel)
        chan.ranks[name.lower()] = rank
        for fake in chan.fake_users:
            if fake.lower() == name.lower():
                chan.fake_users[fake] = rank
        for session in self.members(channel):
            if session.logged_in and (session.name or "").lower() == name.lower():
                session.rank = max(session.global_rank, rank)
                await self.emit("rank", session.rank, to=session.sid)
        await self.emit("setUserRank", {"name": name, "rank": rank}, room=channel)
        return {"rank": rank}

    async def control_set_password(self, channel: str, password: str | None) -> Json:
        """Set (or clear, with null) the channel password; it applies to later joins."""
        self.channel(channel).password = password
        return {"password": password is not None}

    async def control_set_opts(self, channel: str, **opts: Any) -> Json:
        """Change channel options (``chat_antiflood``, ``chat_antiflood_params``, ...):
        ``channelOpts`` to everyone in the channel, as on every change."""
        chan = self.channel(channel)
        chan.opts.update(opts)
        await self.emit("channelOpts", self.channel_opts(chan), room=channel)
        return self.channel_opts(chan)

    async def control_remove_user(self, channel: str, name: str) -> Json:
        """Remove a fake user: ``userLeave`` and ``usercount`` to the channel."""
        chan = self.channel(channel)
        removed = chan.fake_users.pop(name, None) is not None
        if removed:
            await self.emit("userLeave", {"name": name}, room=channel)
            await self.emit("usercount", self.usercount(channel), room=channel)
        return {"removed": removed, "usercount": self.usercount(channel)}

    async def control_add_account(self, name: str, pw: str) -> Json:
        """Register (or re-password) an account: its logins get rank 1."""
        self.accounts[name] = pw
        return {"accounts": sorted(self.accounts)}

    async def control_burn_limiter(self, name: str) -> Json:
        """Saturate the rate limiter of `name`'s sockets (a burst just sent): for tests of
        ``cooldown``."""
        burned = 0
        for session in self.sessions.values():
            if (session.name or "").lower() == name.lower():
                session.limiter.count = 2**31
                session.limiter.last_time = now_ms()
                burned += 1
        return {"burned": burned}

    async def control_spam_filter(self, name: str, on: bool = True) -> Json:
        """Treat `name` as a new account (its chat is ``spamFiltered``) or not any more."""
        if on:
            self.options.new_accounts.add(name)
        else:
            self.options.new_accounts.discard(name)
        return {"new_accounts": sorted(self.options.new_accounts)}

    async def control_reset_budget(self, ip: str | None = None) -> Json:
        """Refill the per-IP connection budget (one IP, or all)."""
        for key in [ip] if ip else list(self.conn_buckets):
            self.conn_buckets.pop(key, None)
        return {"reset": ip or "all"}

    async def control_emit(
        self, channel: str, event: str, data: Any = None, history: bool = False
    ) -> Json:
        """Emit any event with any JSON data to the channel as it is, malformed or not;
        with ``history`` it is also kept in the history replayed on join (as ``chatMsg``)."""
        if history:
            if not isinstance(data, dict):
                raise TypeError("only an object can be kept as a history line")
            self.channel(channel).history.append(data)
        await self.emit(event, data, room=channel)
        return {"recipients": len(self.members(channel))}

    async def control_raw(self, channel: str, packet: str) -> Json:
        """Send one raw Socket.IO packet (the frame after Engine.IO's ``4``, e.g.
        ``2["chatMsg",{}]``), well-formed or not, to every socket in the channel."""
        sent = 0
        for session in self.members(channel):
            eio_sid = self.sio.manager.eio_sid_from_sid(session.sid, "/")
            if eio_sid is not None:
                await self.sio.eio.send(eio_sid, packet)
                sent += 1
        return {"recipients": sent}


# -- command line --
def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    p = argparse.ArgumentParser(prog="local_server.py", description=__doc__.split("\n")[0])
    d = Options()
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port; 0 picks a free one")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit once this process is gone (default: the process that started this one)",
    )
    p.add_argument("--ping-interval", type=int, default=d.ping_interval, help="whole seconds")
    p.add_argument("--ping-timeout", type=float, default=d.ping_timeout, help="seconds")
    p.add_argument("--max-payload", type=int, default=d.max_payload, help="bytes")
    p.add_argument("--conn-burst", type=int, default=d.conn_burst, help="connects per IP")
    p.add_argument(
        "--conn-refill",
        type=float,
        default=d.conn_refill,
        help="seconds per refilled connect token",
    )
    p.add_argument(
        "--max-open-per-ip",
        type=int,
        default=d.max_open_per_ip,
        help="open connections per IP before a kick (0: no limit)",
    )
    p.add_argument("--chat-burst", type=int, default=d.chat_burst, help="minimum limiter")
    p.add_argument("--chat-rate", type=float, default=d.chat_rate, help="messages a second")
    p.add_argument(
        "--antiflood",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=d.antiflood,
        help="channel option chat_antiflood of new channels (true/false)",
    )
    p.add_argument(
        "--duplicate-kick",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=d.duplicate_kick,
        help="kick the older session of an account joining a channel again (true/false)",
    )
    p.add_argument(
        "--antiflood-params",
        type=json.loads,
        default=d.antiflood_params,
        help='JSON {"burst","sustained","cooldown"}: chat_antiflood_params of new channels',
    )
    p.add_argument(
        "--guest-login-delay",
        type=float,
        default=d.guest_login_delay,
        help="seconds between guest logins from one IP (0: no limit)",
    )
    p.add_argument(
        "--channel-password",
        action="append",
        default=[],
        metavar="CHANNEL:PASSWORD",
        help="a channel's password (repeat)",
    )
    p.add_argument(
        "--channel-rank",
        action="append",
        default=[],
        metavar="NAME:RANK",
        help="an account's rank in every channel (repeat)",
    )
    p.add_argument("--max-chat-len", type=int, default=d.max_chat_len)
    p.add_argument(
        "--media",
        type=json.loads,
        default=d.media,
        help='JSON {"id","title","type","seconds"} played in new channels',
    )
    p.add_argument("--no-media", action="store_true", help="nothing plays in new channels")
    p.add_argument(
        "--media-update-interval",
        type=float,
        default=d.media_update_interval,
        help="seconds between mediaUpdate frames (0: none)",
    )
    p.add_argument("--motd", default=d.motd)
    p.add_argument(
        "--channel",
        action="append",
        default=[],
        dest="channels",
        help="allowed channel (repeat); default: any",
    )
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="registered account (repeat)",
    )
    p.add_argument(
        "--new-account",
        action="append",
        default=[],
        metavar="NAME",
        help="account whose chat gets spamFiltered (repeat)",
    )
    args = p.parse_args(argv)
    accounts = {}
    for spec in args.account:
        name, sep, pw = spec.partition(":")
        if not sep or not name:
            p.error(f"--account wants NAME:PASSWORD, got {spec!r}")
        accounts[name] = pw
    passwords = {}
    for spec in args.channel_password:
        channel, sep, pw = spec.partition(":")
        if not sep or not channel:
            p.error(f"--channel-password wants CHANNEL:PASSWORD, got {spec!r}")
        passwords[channel] = pw
    ranks = {}
    for spec in args.channel_rank:
        name, sep, rank = spec.partition(":")
        if not sep or not name or not rank.lstrip("-").isdigit():
            p.error(f"--channel-rank wants NAME:RANK, got {spec!r}")
        ranks[name] = int(rank)
    return Options(
        host=args.host,
        port=args.port,
        port_file=args.port_file,
        parent_pid=args.parent_pid if args.parent_pid is not None else os.getppid(),
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        max_payload=args.max_payload,
        conn_burst=args.conn_burst,
        conn_refill=args.conn_refill,
        max_open_per_ip=args.max_open_per_ip,
        chat_burst=args.chat_burst,
        chat_rate=args.chat_rate,
        antiflood=args.antiflood,
        duplicate_kick=args.duplicate_kick,
        antiflood_params=args.antiflood_params,
        guest_login_delay=args.guest_login_delay,
        channel_passwords=passwords,
        channel_ranks=ranks,
        max_chat_len=args.max_chat_len,
        media=None if args.no_media else args.media,
        media_update_interval=args.media_update_interval,
        motd=args.motd,
        channels=args.channels,
        accounts=accounts,
        new_accounts=set(args.new_account),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket; SO_REUSEADDR so a restart can take the same port at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> None:
    """Bind, announce the port, serve until SIGINT/SIGTERM."""
    options = parse_args(argv)
    sock = listen(options.host, options.port)
    options.port = sock.getsockname()[1]
    peer = CytubePeer(options)
    if options.port_file:
        tmp = options.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{options.port}\n")
        os.replace(tmp, options.port_file)
    print(f"cytube peer listening on http://{options.host}:{options.port}", flush=True)
    config = uvicorn.Config(
        peer.app,
        ws="wsproto",
        http="h11",
        lifespan="on",
        log_level="warning",
        ws_ping_interval=None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
