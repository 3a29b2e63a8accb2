"""The ``[retention]`` section: off by default, one rule per table given, bad values named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import RetentionConfig, load_config, parse_config
from daz_actors.runtime.errors import ConfigError
from daz_actors.storage.retention import TableRetention

BASE = """\
[tree]
root = "daz"

[supervisors.daz]
children = ["a"]

[actors.a]
kind = "failure-log"
"""


def test_retention_is_off_by_default() -> None:
    """Without a [retention] section (the shipped config too), no table is pruned by age."""
    assert parse_config(BASE, default_kinds()).table_retention == ()
    assert load_config(None, default_kinds()).table_retention == ()


def test_each_retention_key_prunes_its_table_by_the_bots_receipt_time() -> None:
    """chat_days, private_days and events_days each give one table its rule."""
    text = BASE + "\n[retention]\nchat_days = 365\nprivate_days = 30.5\nevents_days = 7\n"
    cfg = parse_config(text, default_kinds())
    assert cfg.retention == RetentionConfig(chat_days=365, private_days=30.5, events_days=7)
    assert cfg.table_retention == (
        TableRetention(table="daz_chat_messages", column="received_at", days=365),
        TableRetention(table="daz_private_messages", column="received_at", days=30.5),
        TableRetention(table="daz_channel_events", column="at", days=7),
    )
    only_chat = parse_config(BASE + "\n[retention]\nchat_days = 90\n", default_kinds())
    assert [r.table for r in only_chat.table_retention] == ["daz_chat_messages"]


@pytest.mark.parametrize(
    ("line", "path", "reason"),
    [
        ("chat_days = 0", "retention.chat_days", "must be > 0 (leave the key out"),
        ("private_days = -3", "retention.private_days", "must be > 0"),
        ("events_days = 40000", "retention.events_days", "must be at most 36500"),
        ("chat_days = 1e308", "retention.chat_days", "out of range"),
        ("chat_days = nan", "retention.chat_days", "expected a finite number"),
        ('chat_days = "30d"', "retention.chat_days", "expected a number, got the string"),
        ("chat_days = true", "retention.chat_days", "expected a number, got a boolean"),
        ("chat_day = 30", "retention.chat_day", "unknown key; expected one of chat_days"),
    ],
)
def test_a_bad_retention_is_refused_naming_the_key(line: str, path: str, reason: str) -> None:
    """Each bad value gets a ConfigError whose path is the key and whose reason says why."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"{BASE}\n[retention]\n{line}\n", default_kinds())
    assert info.value.path == path
    assert reason in info.value.reason


def test_a_retention_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"retention = 30\n{BASE}", default_kinds())
    assert info.value.path == "retention"
    assert "expected a table" in info.value.reason


def test_the_example_and_the_error_on_the_configuration_page_are_what_the_code_does() -> None:
    """docs/configuration.md's [retention] block loads as described, and the error it
    quotes for ``chat_days = 0`` is the one a user gets."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    [block] = re.findall(r"```toml\n(\[retention\]\n.*?)```", page, re.DOTALL)
    cfg = parse_config(BASE + "\n" + block, default_kinds())
    assert cfg.retention == RetentionConfig(chat_days=365, private_days=90, events_days=30)
    with pytest.raises(ConfigError) as info:
        parse_config(f"{BASE}\n[retention]\nchat_days = 0\n", default_kinds())
    quoted = re.search(r"\(`(retention\.chat_days: .*?)`\)", page.replace("\n", " "))
    assert quoted is not None
    assert str(info.value) == quoted[1]
