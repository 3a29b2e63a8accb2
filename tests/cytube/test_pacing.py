"""The bot's mirror of CyTube's chat rate limiter, checked against the local server's copy
of the server's own algorithm (``newRateLimiter``), and the reader's text of chat lines."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import wait_all_tasks_blocked

from daz_actors.cytube.local_server import RateLimiter, format_chat
from daz_actors.cytube.login import judge_login_error
from daz_actors.cytube.pacing import (
    ANTIFLOOD_DEFAULT,
    MIN_ANTIFLOOD,
    LimiterMirror,
    LimiterParams,
    Margin,
    chat_params,
    least_time,
)
from daz_actors.cytube.sender import Sender
from daz_actors.cytube.text import reader_text

PARAMS = st.sampled_from(
    [
        MIN_ANTIFLOOD,
        ANTIFLOOD_DEFAULT,
        LimiterParams(burst=2, sustained=5),
        LimiterParams(burst=3, sustained=2, cooldown=1),
    ]
)


def server_opts(params: LimiterParams) -> dict[str, float]:
    opts: dict[str, float] = {"burst": params.burst, "sustained": params.sustained}
    if params.cooldown is not None:
        opts["cooldown"] = params.cooldown
    return opts


@given(
    params=PARAMS,
    pms=st.lists(st.booleans(), min_size=1, max_size=60),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=60, max_size=60),
    # each line's transit time varies by up to 4.5 ms either way: two lines' transit times
    # differ by at most 9 ms (one late, the next early), plus 1 ms of the server's rounding
    # to whole ms, within the margin's fixed 10 ms
    jitter=st.lists(st.floats(min_value=-0.0045, max_value=0.0045), min_size=60, max_size=60),
)
def test_lines_sent_when_the_mirror_allows_are_never_refused_by_the_server(
    params, pms, gaps, jitter
):
    """Whatever the mix of chat lines and PMs, idle gaps and network jitter below the
    margin (the difference between two lines' transit times), a line sent when the
    mirror says so is allowed by the server's algorithm."""
    mirror = LimiterMirror(margin=Margin())
    server = RateLimiter()
    now = 1000.0
    for n, is_pm in enumerate(pms):
        used = MIN_ANTIFLOOD if is_pm else params
        now += gaps[n] if n % 3 == 0 else 0.0  # bursts of lines, then idle gaps
        now += mirror.wait(now, used)
        mirror.record(now, used)
        arrives = round((now + 0.01 + jitter[n]) * 1000)  # at the server, in its ms
        assert not server.throttle(server_opts(used), now=arrives), (n, mirror)


def test_least_time_is_the_burst_then_one_line_per_interval():
    """The benchmark's yardstick: 20 at once, then 10 a second (51 lines: 3.1 s)."""
    assert least_time([0.0] * 20, MIN_ANTIFLOOD) == 0.0
    assert abs(least_time([0.0] * 51, MIN_ANTIFLOOD) - 3.1) < 1e-9
    assert abs(least_time([0.0] * 20, ANTIFLOOD_DEFAULT) - 16.0) < 1e-9


def test_chat_params_follow_channel_opts_and_the_bots_rank():
    """Anti-flood parameters apply to chat only with chat_antiflood on and rank below 2."""
    opts = {"chat_antiflood": True, "chat_antiflood_params": {"burst": 3, "sustained": 2}}
    assert chat_params(opts, 1) == LimiterParams(burst=3, sustained=2)
    assert chat_params(opts, 2) == MIN_ANTIFLOOD
    assert chat_params({**opts, "chat_antiflood": False}, 0) == MIN_ANTIFLOOD
    assert chat_params({"chat_antiflood": True}, 1) == ANTIFLOOD_DEFAULT


def test_reader_text_undoes_the_servers_escaping_and_link_tags():
    """What the server broadcasts, read as a browser shows it, is what the user typed."""
    for typed in ["<b>html & stuff</b>", "see http://x.org/a?b=1&c=(2) 'q' \"d\"", "you & me"]:
        assert reader_text(format_chat(typed)) == typed
    assert reader_text("&lt;b&gt;html &amp; stuff&lt;/b&gt;") == "<b>html & stuff</b>"


def test_login_errors_are_temporary_or_permanent():
    """The guest limit is retried after the time it names; a bad password never."""
    guest = judge_login_error(
        "Guest logins are restricted to one per IP address per 60 seconds.", default_wait=5
    )
    assert not guest.permanent
    assert guest.retry_after == 61.0
    assert judge_login_error("Invalid username/password combination", default_wait=5).permanent
    assert judge_login_error("That username is registered.", default_wait=5).permanent
    busy = judge_login_error("That name is already in use on this channel.", default_wait=5)
    assert not busy.permanent
    assert busy.retry_after == 5


async def test_after_a_cooldown_no_line_goes_out_while_another_ones_fate_is_unknown(
    autojump_clock,
):
    """The Sender's own bookkeeping (its frames go to a list, the server's answers are
    given by hand): once a cooldown came, a line is sent only when no other line's fate
    is unknown, and the refused line goes out again exactly once."""
    frames: list[str] = []

    async def send(frame: str) -> None:
        frames.append(frame)

    sender = Sender("c", echo_timeout=600, hold=600)
    sender.set_session(send)
    sender.set_speaking(True, "joined")
    results: list[int] = []

    async def say(text: str) -> None:
        results.append(await sender.deliver(text))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        for n in range(3):
            nursery.start_soon(say, f"line {n}")
            await wait_all_tasks_blocked()
        assert len(frames) == 3  # within the burst: pipelined
        sender.cooldown(100)  # answers come in order: "line 0" was refused
        await trio.sleep(5)
        assert len(frames) == 3  # lines 1 and 2 are still unknown: nothing goes out
        sender.echoed("line 1")
        await trio.sleep(5)
        assert len(frames) == 3  # line 2 is still unknown
        sender.echoed("line 2")
        await trio.sleep(5)
        assert len(frames) == 4
        assert "line 0" in frames[-1]
        sender.echoed("line 0")
        await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert results == [1, 1, 1]
    assert sender.refused == 1


async def test_a_line_that_fails_midway_says_which_parts_were_delivered(autojump_clock):
    """The Sender's bookkeeping (frames to a list, answers by hand): the first part of a
    two-part line is echoed, the second never is; the failure counts one part delivered,
    and a retry that skips it sends the second part only."""
    from daz_actors.cytube.sender import SendFailed

    frames: list[str] = []

    async def send(frame: str) -> None:
        frames.append(frame)

    sender = Sender("c", echo_timeout=10, hold=600)
    sender.set_session(send)
    sender.set_speaking(True, "joined")
    first, second = "a" * 300, "b" * 100
    outcome: list[BaseException | int] = []

    async def say(skip: int) -> None:
        try:
            outcome.append(await sender.deliver(f"{first} {second}", skip=skip))
        except SendFailed as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        nursery.start_soon(say, 0)
        await wait_all_tasks_blocked()
        sender.echoed(first)  # the second part is never echoed
        await trio.sleep(11)  # past its echo timeout (virtual time)
        [failed] = outcome
        assert isinstance(failed, SendFailed)
        assert failed.delivered_parts == 1
        sent_before = len(frames)
        nursery.start_soon(say, 1)
        await wait_all_tasks_blocked()
        assert len(frames) == sent_before + 1
        assert second in frames[-1]
        assert first not in frames[-1]
        sender.echoed(second)
        await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert outcome[1] == 2  # the line's parts, counting the one delivered before
