"""The command registry, the built-in commands, cooldowns and the router's pure parts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

import daz_actors
from daz_actors import NameTaken, Registry, SqlClient
from daz_actors.cytube.chat_log import channel_event_write, chat_write, private_write
from daz_actors.cytube.commands import (
    COOLDOWNS_KEPT,
    CommandContext,
    CommandRegistry,
    Cooldowns,
    builtin_commands,
    format_duration,
    parse_command,
    summarize_tree,
)
from daz_actors.cytube.events import ChatMessage, MediaChanged, PrivateMessage, User, UserJoined
from daz_actors.cytube.router import RouterParams
from daz_actors.runtime.breaker import BreakerState
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.runtime.supervision_policy import Restart
from daz_actors.runtime.supervisor import ChildInfo, ChildState
from daz_actors.storage.errors import DatabaseUnavailable
from daz_actors.storage.queue_types import QueueStats, RetryStatus
from daz_actors.storage.sql_messages import GatewayStatus


def context(commands: CommandRegistry, *, rank: float = 0, args: str = "", **kw: Any) -> Any:
    defaults: dict[str, Any] = {
        "channel": "test",
        "username": "ann",
        "rank": rank,
        "name": "x",
        "args": args,
        "started_at": time.time(),
        "registry": Registry(),
        "db": SqlClient(ActorRef(Mailbox("sql-gateway", 1))),
        "commands": commands,
    }
    defaults.update(kw)
    return CommandContext(**defaults)


async def test_register_decorator_adds_a_command_found_case_insensitively():
    """A decorated function is registered under its name and returned unchanged."""
    commands = CommandRegistry()

    @commands.register("roll", description="roll a die", min_rank=1)
    async def roll(ctx: CommandContext) -> str:
        return f"{ctx.username} rolled 4"

    found = commands.get("ROLL")
    assert found is not None
    assert found.fn is roll
    assert (found.name, found.description, found.min_rank) == ("roll", "roll a die", 1)
    assert "Roll" in commands
    assert commands.names() == ["roll"]
    assert len(commands) == 1
    assert await roll(context(commands)) == "ann rolled 4"


def test_a_duplicate_name_is_refused():
    """Registering a name twice raises NameTaken naming the command."""
    commands = builtin_commands()
    with pytest.raises(NameTaken, match="'help' is already registered"):
        commands.add("help", builtin_commands().get("help").fn, description="again")  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "Help", "!help", "two words", "x" * 33, "-dash", 5, "é"])
def test_a_bad_name_is_refused_with_a_clear_error(name: Any):
    """Names must be short lower-case words without the prefix."""
    commands = CommandRegistry()
    with pytest.raises(ValueError, match="invalid command name"):

        @commands.register(name, description="d")
        async def cmd(_ctx: CommandContext) -> None:
            return None


def test_bad_descriptions_and_ranks_are_refused():
    """A blank description or a non-numeric rank is an error at registration."""
    commands = CommandRegistry()

    async def cmd(_ctx: CommandContext) -> None:
        return None

    with pytest.raises(ValueError, match="description"):
        commands.add("a", cmd, description="  ")
    with pytest.raises(TypeError, match="min_rank"):
        commands.add("a", cmd, description="d", min_rank="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        commands.add("a", cmd, description="d", min_rank=float("nan"))
    assert "a" not in commands


def test_include_adds_another_registry_and_refuses_clashes():
    """Extra commands join the built-ins; one reusing a built-in name is refused."""
    extra = CommandRegistry()

    @extra.register("roll", description="roll a die")
    async def roll(_ctx: CommandContext) -> str:
        return "4"

    commands = builtin_commands()
    commands.include(extra)
    assert commands.names() == ["about", "debug", "help", "roll", "uptime"]
    clash = CommandRegistry()
    clash.add("uptime", roll, description="mine")
    with pytest.raises(NameTaken):
        commands.include(clash)


async def test_help_lists_only_what_the_users_rank_allows():
    """!help shows !debug to rank 2 and above only, with descriptions, sorted."""
    commands = builtin_commands(debug_min_rank=2)
    help_cmd = commands.get("help")
    assert help_cmd is not None
    guest = await help_cmd.fn(context(commands, rank=0))
    assert guest == (
        "Commands: !about: what this bot is | !help: list the commands you can use"
        " | !uptime: how long the bot has been running"
    )
    moderator = await help_cmd.fn(context(commands, rank=2, prefix="$"))
    assert moderator is not None
    assert "$debug: breaker, retry queue and tree state" in moderator
    assert [c.name for c in commands.visible_to(1.5)] == ["about", "help", "uptime"]


async def test_about_names_the_version():
    """!about says the package name and version."""
    commands = builtin_commands()
    about = commands.get("about")
    assert about is not None
    reply = await about.fn(context(commands))
    assert reply is not None
    assert reply.startswith(f"daz-actors {daz_actors.__version__}: ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (59, "59s"),
        (60, "1m 0s"),
        (7384, "2h 3m 4s"),
        (3600, "1h 0m 0s"),
        (90061, "1d 1h 1m 1s"),
        (-5, "0s"),
    ],
)
def test_durations_are_formatted_for_humans(seconds: float, text: str):
    """Whole seconds, from the largest non-zero unit down."""
    assert format_duration(seconds) == text


async def test_uptime_counts_from_the_process_start():
    """!uptime reports the time since `started_at`."""
    commands = builtin_commands()
    uptime = commands.get("uptime")
    assert uptime is not None
    assert await uptime.fn(context(commands, started_at=time.time() - 7384.2)) == "up 2h 3m 4s"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("!help", ("help", "")),
        ("!Roll  20 sides ", ("roll", "20 sides")),
        ("!", None),
        ("! help", None),
        ("help", None),
        ("hello !help", None),
        ("", None),
    ],
)
def test_command_lines_are_parsed(text: str, parsed: tuple[str, str] | None):
    """Only a line starting with the prefix directly followed by a name is a command."""
    assert parse_command(text, "!") == parsed


def test_cooldown_is_per_user_per_command():
    """A user waits `seconds` before the same command; other users and commands do not."""
    cooldowns = Cooldowns(3.0)
    assert cooldowns.allow("Ann", "uptime", 100.0)
    assert not cooldowns.allow("ann", "uptime", 101.0)  # names are case-insensitive
    assert not cooldowns.allow("ANN", "uptime", 102.999)
    assert cooldowns.allow("bob", "uptime", 101.0)
    assert cooldowns.allow("ann", "help", 101.0)
    assert cooldowns.allow("ann", "uptime", 103.0)  # exactly the cooldown later
    assert not cooldowns.allow("ann", "uptime", 104.0)  # the new run restarted it


def test_a_command_may_bring_its_own_cooldown():
    """A command's own cooldown (a plugin's) replaces the room's for that command only;
    a registry refuses a negative one."""
    cooldowns = Cooldowns(3.0)
    assert cooldowns.allow("ann", "tell", 100.0, seconds=30.0)
    assert not cooldowns.allow("ann", "tell", 120.0, seconds=30.0)
    assert cooldowns.allow("ann", "tell", 130.0, seconds=30.0)
    assert cooldowns.allow("ann", "remind", 100.0, seconds=0.0)
    assert cooldowns.allow("ann", "remind", 100.0, seconds=0.0)
    assert cooldowns.allow("ann", "uptime", 100.0)
    assert not cooldowns.allow("ann", "uptime", 102.0)  # the room's 3 s
    registry = CommandRegistry()

    async def fn(ctx: Any) -> str:
        return "x"

    registry.add("slow", fn, description="d", cooldown=30)
    assert registry.get("slow").cooldown == 30.0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="cooldown must be"):
        registry.add("bad", fn, description="d", cooldown=-1)


def test_a_zero_cooldown_allows_everything_and_bad_ones_are_refused():
    """Cooldown 0 never blocks; negative or infinite cooldowns are errors."""
    cooldowns = Cooldowns(0)
    assert all(cooldowns.allow("ann", "uptime", 5.0) for _ in range(3))
    for bad in (-1, float("inf"), "3"):
        with pytest.raises(ValueError, match="cooldown"):
            Cooldowns(bad)  # type: ignore[arg-type]


def test_cooldown_entries_are_pruned_once_expired():
    """Old entries do not pile up: past the limit, expired ones are dropped."""
    cooldowns = Cooldowns(1.0)
    for n in range(5000):
        cooldowns.allow(f"user{n}", "uptime", float(n))
    assert len(cooldowns) < 4200


def test_router_params_validate_early():
    """Bad router parameters fail at construction, naming the field."""
    params = RouterParams(channel="test")
    assert params.connection_name == "room:test/connection"
    assert (params.command_prefix, params.command_cooldown, params.debug_min_rank) == ("!", 3, 2)
    assert params.log_history is True
    bad: list[dict[str, Any]] = [
        {"channel": ""},
        {"channel": "a b"},
        {"channel": "t", "command_prefix": ""},
        {"channel": "t", "command_cooldown": -1},
        {"channel": "t", "command_cooldown": float("nan")},
        {"channel": "t", "debug_min_rank": 1.5},
        {"channel": "t", "log_history": "yes"},
        {"channel": "t", "command_timeout": 0},
        {"channel": "t", "max_running_commands": 0},
        {"channel": "t", "bot_name": "my bot"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError, match=next(iter(kwargs.keys() - {"channel"}), "channel")):
            RouterParams(**kwargs)
    with pytest.raises(TypeError):
        RouterParams()  # type: ignore[call-arg]


def test_event_ids_are_deterministic_and_arguments_json_serialisable():
    """The same line gives the same id whether live or replayed; the args survive JSON."""
    line = ChatMessage(channel="c", username="ann", msg="hi\x00", time=1_700_000_000_123)
    replay = ChatMessage(
        channel="c", username="ann", msg="hi\x00", time=1_700_000_000_123, history=True
    )
    live, again = chat_write(line, 1), chat_write(replay, 99)
    assert live.event_id == again.event_id
    assert chat_write(ChatMessage(channel="c", username="ann", msg="hi!", time=1), 1).event_id != (
        live.event_id
    )
    assert "\x00" not in json.dumps(live.args())
    assert json.loads(json.dumps(live.args())) == list(live.args())
    pm = PrivateMessage(channel="c", username="a", to="b", msg="m", time=5)
    assert private_write(pm, 6).event_id == private_write(pm, 7).event_id
    join = UserJoined(channel="c", user=User(name="ann", rank=1))
    assert channel_event_write(join, 10).event_id == channel_event_write(join, 10).event_id
    assert channel_event_write(join, 10).event_id != channel_event_write(join, 11).event_id
    media = MediaChanged(channel="c", title="t", media_id="id", media_type="yt", seconds=60)
    json.dumps(channel_event_write(media, 1).args())


def child(name: str, state: ChildState, restarts: int = 0, **kw: Any) -> ChildInfo:
    return ChildInfo(
        name=name,
        registered_as=name,
        state=state,
        restart=Restart.PERMANENT,
        restarts=restarts,
        incarnation=1,
        last_error=None,
        backoff_until=None,
        mailbox_depth=0,
        children=kw.get("children"),
    )


def test_tree_summary_counts_states_and_restarts_recursively():
    """Nested children are counted; the ones not running are named."""
    tree = [
        child(
            "storage",
            ChildState.RUNNING,
            children=(child("sql-gateway", ChildState.RUNNING, restarts=2),),
        ),
        child("room:x/connection", ChildState.BACKING_OFF, restarts=1),
    ]
    assert summarize_tree(tree) == (
        "tree: 3 actors, 1 backing_off, 2 running, not running: room:x/connection, 3 restarts"
    )


class FakeDb:
    """A stand-in SqlClient: a gateway status and queue stats, or failures."""

    def __init__(self, *, up: bool) -> None:
        self.up = up

    async def status(self) -> GatewayStatus:
        return GatewayStatus(
            connected=self.up,
            database="postgresql://x",
            breaker=BreakerState.CLOSED if self.up else BreakerState.OPEN,
            failure_ratio=0.0,
            breaker_transitions=0,
            calls=10,
            failures=1,
            in_flight=0,
        )

    async def run(self, fn: Any, **_kw: Any) -> list[QueueStats]:
        if not self.up:
            raise DatabaseUnavailable("down")
        now = datetime.now(UTC)
        return [
            QueueStats(
                status=status,
                event_type=event_type,
                plugin=None,
                item_count=count,
                oldest_created_at=now,
                earliest_next_retry_at=now,
                max_retry_count=0,
                avg_retry_count=0.0,
            )
            for status, event_type, count in [
                (RetryStatus.PENDING, "sql.exec", 2),
                (RetryStatus.PENDING, "cytube.send_chat", 1),
                (RetryStatus.DEAD_LETTER, "sql.exec", 1),
            ]
        ]


async def test_debug_reports_breaker_queue_and_tree_and_survives_an_outage():
    """!debug sums the queue by status; with the database down it says so per part."""
    commands = builtin_commands()
    debug = commands.get("debug")
    assert debug is not None
    tree = [child("a", ChildState.RUNNING)]
    up = await debug.fn(context(commands, rank=2, db=FakeDb(up=True), tree_state=lambda: tree))
    assert up == (
        "db: connected, breaker closed, 1/10 calls failed · queue: dead_letter 1, pending 3"
        " · tree: 1 actors, 1 running, 0 restarts"
    )
    down = await debug.fn(context(commands, rank=2, db=FakeDb(up=False)))
    assert down == (
        "db: not connected, breaker open, 1/10 calls failed · queue: unavailable "
        "(database_unavailable)"
    )


def test_cooldowns_stay_bounded_even_when_every_entry_is_still_cooling_down():
    """A flood of new users within one long cooldown: at most COOLDOWNS_KEPT entries are
    kept, the oldest forgotten first (that user may run the command again early)."""
    cooldowns = Cooldowns(3600.0)
    for n in range(COOLDOWNS_KEPT + 500):
        assert cooldowns.allow(f"user{n}", "uptime", 100.0 + n * 0.001)
    assert len(cooldowns) == COOLDOWNS_KEPT
    newest = f"user{COOLDOWNS_KEPT + 499}"
    assert not cooldowns.allow(newest, "uptime", 200.0)  # the newest are still kept
    assert cooldowns.allow("user0", "uptime", 200.0)  # the oldest were forgotten
