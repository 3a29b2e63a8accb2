"""One sender per connection: chat lines and private messages out, paced and accounted for.

Every line the bot says goes through one queue and one pump task, so callers wait their
turn in order and are released one at a time. The pump sends the head of the queue when
`LimiterMirror` says the server's rate limiter surely allows it (the parameters that apply
to the bot now: its rank and the channel's ``channelOpts``), and only while the bot can
speak (joined and logged in).

Each line's fate comes back from the server, in the order the lines were sent (the server
answers each event of a socket in turn): its echo (delivered), ``cooldown`` (refused by the
limiter: it goes back to the head of the queue and is sent again once the limiter allows;
it was never shown, so this cannot duplicate it), ``spamFiltered``/``noflood``/``errorMsg``
(refused for good: the send fails). An echo is matched to the oldest line in flight with
the same reader's text (or, with the server's filters changing the text, the oldest in
flight); lines sent before it that got no answer at all were dropped by the server.

``cooldown`` says nothing about which line it refuses. Lines are pipelined only while the
mirror is exact; from a refusal until the server's count has surely been reset, one line
at a time is in flight: never more than one line whose fate is unknown.

While the bot cannot speak for now (reconnecting, answering the channel password, waiting
to log in again), lines wait in the queue, each at most its `hold` seconds of silence;
while it cannot speak for a lasting reason (read only, login refused, wrong channel
password, kicked for a duplicate login) they fail at once with `CannotSpeak`. Neither is a
delivery failure: the connection does not queue them for retry.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Awaitable, Callable

import attrs
import trio

from daz_actors.cytube.codec import encode_event
from daz_actors.cytube.events import CHAT_LIMIT
from daz_actors.cytube.pacing import (
    DEFAULT_MARGIN,
    MIN_ANTIFLOOD,
    LimiterMirror,
    LimiterParams,
    Margin,
)
from daz_actors.cytube.protocol import split_message
from daz_actors.cytube.text import expected_echo
from daz_actors.runtime.errors import DazActorsError

__all__ = ["CannotSpeak", "SendFailed", "Sender"]


class SendFailed(DazActorsError, RuntimeError):
    """A chat message was not delivered (not echoed in time, refused, or not connected).

    `delivered_parts` counts the leading parts of the message that were delivered before
    it failed (set by `Sender.deliver`): a retry sends the rest only.
    """

    delivered_parts = 0


class CannotSpeak(SendFailed):
    """The bot cannot speak in the room (not joined, not logged in, ...): not said, and not
    queued for a retry either (a reply is only worth saying while it is fresh)."""

    retryable = False
    code = "cannot_speak"


class _State(enum.Enum):
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DONE = "done"


@attrs.define(eq=False)
class _Line:
    """One part of a chat line or private message."""

    text: str
    to: str | None  # None: a chat line; else a private message to this user
    hold: float  # seconds it may wait while the bot cannot speak
    state: _State = _State.QUEUED
    sent_at: float = -math.inf
    mute_since: float | None = None  # when it started waiting for the bot to speak
    error: BaseException | None = None
    abandoned: bool = False  # its caller stopped waiting

    @property
    def frame(self) -> str:
        if self.to is None:
            return encode_event("chatMsg", {"msg": self.text, "meta": {}})
        return encode_event("pm", {"to": self.to, "msg": self.text, "meta": {}})


SendFrame = Callable[[str], Awaitable[None]]


class Sender:
    """The queue, the pump and the bookkeeping of one connection's outgoing lines."""

    def __init__(
        self,
        channel: str,
        *,
        echo_timeout: float,
        hold: float,
        margin: Margin = DEFAULT_MARGIN,
        max_in_flight: int = MIN_ANTIFLOOD.burst,
        limit: int = CHAT_LIMIT,
    ) -> None:
        self.channel = channel
        self.echo_timeout = echo_timeout
        self.hold = hold
        self.max_in_flight = max_in_flight
        self.limit = limit
        self.mirror = LimiterMirror(margin=margin)
        self.chat_params = MIN_ANTIFLOOD  # what the server applies to our chat lines now
        self.careful = False  # after a refusal: one line in flight until the mirror is exact
        self.can_speak = False
        self.lasting: str | None = None  # why the bot cannot speak, when it lasts
        self.reason = "not connected"  # why it cannot speak now
        self.sent = 0  # lines delivered (echoed)
        self.refused = 0  # lines the server refused with cooldown (and that were sent again)
        # the most lines in flight at once while a refusal was being accounted for: 1
        self.unknown_peak = 0
        self._send: SendFrame | None = None
        self._queue: collections.deque[_Line] = collections.deque()
        self._in_flight: collections.deque[_Line] = collections.deque()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ state

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def set_session(self, send: SendFrame | None) -> None:
        """A session started (frames go out through `send`) or ended (None): lines in flight
        then have no known fate and fail."""
        self._send = send
        if send is None:
            self.careful = False
            while self._in_flight:
                self._settle(
                    self._in_flight.popleft(), SendFailed("the connection was lost before the echo")
                )
        self._poke()

    def set_speaking(self, can_speak: bool, reason: str = "", *, lasting: bool = False) -> None:
        """Whether the bot can speak now; if not, why, and whether that lasts (queued lines
        then fail at once, new ones are refused)."""
        self.can_speak = can_speak
        self.reason = reason
        self.lasting = reason if (lasting and not can_speak) else None
        if self.lasting is not None:
            while self._queue:
                self._settle(self._queue.popleft(), self._cannot_speak())
        self._poke()

    def set_chat_params(self, params: LimiterParams) -> None:
        """The limiter parameters the server now applies to our chat lines."""
        self.chat_params = params
        self._poke()

    def _cannot_speak(self) -> CannotSpeak:
        return CannotSpeak(f"the bot cannot speak in {self.channel}: {self.reason}")

    def _settle(self, line: _Line, error: BaseException | None) -> None:
        line.state = _State.DONE
        line.error = error
        self._poke()

    # ------------------------------------------------------------------ callers

    async def deliver(
        self,
        msg: str,
        *,
        to: str | None = None,
        hold: float | None = None,
        skip: int = 0,
        progress: list[int] | None = None,
    ) -> int:
        """Say `msg` (split at the server's limit) in the channel, or privately to `to`;
        return the number of parts once each was echoed. Raises `SendFailed`, whose
        `delivered_parts` (and ``progress[0]`` at every moment) counts the leading parts
        delivered; the first `skip` parts (delivered by an earlier attempt) are not sent."""
        progress = progress if progress is not None else [0]
        parts = split_message(msg, self.limit)
        progress[0] = min(max(skip, 0), len(parts))
        if self.lasting is not None:
            raise self._cannot_speak()
        wait = self.hold if hold is None else hold
        lines = [_Line(text=part, to=to, hold=wait) for part in parts[progress[0] :]]
        self._queue.extend(lines)
        self._poke()
        try:
            for line in lines:
                await self._fate(line)
                progress[0] += 1
        except SendFailed as exc:
            exc.delivered_parts = progress[0]
            raise
        finally:
            for line in lines:
                if line.state is _State.QUEUED:
                    self._queue.remove(line)
                    line.state = _State.DONE
                # a line in flight stays there: its answer is still to come, in order
                line.abandoned = True
        return len(parts)

    async def _fate(self, line: _Line) -> None:
        while line.state is not _State.DONE:
            now = trio.current_time()
            if line.state is _State.QUEUED:
                if self.can_speak and self._send is not None:
                    line.mute_since = None
                    deadline = math.inf
                else:
                    if line.mute_since is None:
                        line.mute_since = now
                    deadline = line.mute_since + line.hold
                    if now >= deadline:
                        self._queue.remove(line)
                        self._settle(line, self._cannot_speak())
                        break
            else:
                deadline = line.sent_at + self.echo_timeout
                if now >= deadline:
                    self._in_flight.remove(line)
                    self._settle(line, SendFailed(f"no echo within {self.echo_timeout:g} s"))
                    break
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
        if line.error is not None:
            raise line.error

    # ------------------------------------------------------------------ the pump

    def _params(self, line: _Line) -> LimiterParams:
        return self.chat_params if line.to is None else MIN_ANTIFLOOD

    async def run(self) -> None:
        """The pump: sends the head of the queue when the server's limiter allows it."""
        while True:
            changed = self._changed
            send = self._send
            limit = 1 if self.careful else self.max_in_flight
            if not (self._queue and self.can_speak and send is not None) or (
                len(self._in_flight) >= limit
            ):
                await changed.wait()
                continue
            line = self._queue[0]
            params = self._params(line)
            now = trio.current_time()
            if self.careful and not self._in_flight and self.mirror.cooled(now, params):
                self.careful = False  # the server's count is surely reset: exact again
            wait = self.mirror.wait(now, params)
            if wait > 0:
                with trio.move_on_after(wait):
                    await changed.wait()
                continue
            self._queue.popleft()
            self.mirror.record(now, params)
            line.state, line.sent_at = _State.IN_FLIGHT, now
            self._in_flight.append(line)
            if self.careful:
                self.unknown_peak = max(self.unknown_peak, len(self._in_flight))
            self._poke()
            try:
                await send(line.frame)
            except Exception as exc:  # the session is ending: its reader fails the rest
                if line.state is _State.IN_FLIGHT:
                    self._in_flight.remove(line)
                    self._settle(line, SendFailed(f"the connection failed while sending: {exc}"))

    # ------------------------------------------------------------------ fates

    def _match(self, text: str, to: str | None) -> _Line | None:
        same_kind = [
            line
            for line in self._in_flight
            if (to is None) == (line.to is None)
            and (to is None or line.to is None or line.to.lower() == to.lower())
        ]
        for line in same_kind:
            if expected_echo(line.text, self.limit) == text:
                return line
        return same_kind[0] if same_kind else None  # the server's filters changed the text

    def echoed(self, text: str, *, to: str | None = None) -> None:
        """Our own chat line (or private message to `to`) came back: delivered. Lines sent
        before it that are still waiting got no answer: the server dropped them."""
        line = self._match(text, to)
        if line is None:
            return
        while self._in_flight:
            earlier = self._in_flight.popleft()
            if earlier is line:
                break
            self._settle(earlier, SendFailed("the server dropped the line without a word"))
        self.sent += 1
        self._settle(line, None)

    def cooldown(self, wait_ms: float) -> None:
        """``cooldown``: the oldest line in flight was refused by the rate limiter (answers
        come in order). It goes back to the head of the queue: sent again, never twice."""
        self.mirror.refused(trio.current_time(), wait_ms)
        self.careful = True
        if self._in_flight:
            line = self._in_flight.popleft()
            self.refused += 1
            if line.abandoned:
                self._settle(line, SendFailed("refused, and nobody waits for it any more"))
            else:
                line.state = _State.QUEUED
                self._queue.appendleft(line)
        self._poke()

    def refused_for_good(self, reason: str, *, private_only: bool = False) -> None:
        """``spamFiltered``, ``noflood`` or ``errorMsg``: the oldest line in flight fails
        (for ``errorMsg``, only if it is a private message)."""
        if not self._in_flight or (private_only and self._in_flight[0].to is None):
            return
        self._settle(self._in_flight.popleft(), SendFailed(f"the server refused it: {reason}"))

    @property
    def waiting(self) -> int:
        """Lines queued or in flight."""
        return len(self._queue) + len(self._in_flight)
