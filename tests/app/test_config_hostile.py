"""Config files a careless operator (or a fuzzer) writes: a clear error, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from daz_actors import default_kinds
from daz_actors.app.cli import main
from daz_actors.app.config import default_config_text, parse_config
from daz_actors.runtime.errors import ConfigError

DEFAULT = default_config_text()


def edited(old: str, new: str, text: str = DEFAULT) -> str:
    assert old in text
    return text.replace(old, new, 1)


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, default_kinds())
    return caught.value


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        (
            edited("worker_count = 3", "worker_count = 99999999999999999999"),
            "actors.retry.params.worker_count",
            "out of range",
        ),
        (
            edited("worker_count = 3", "worker_count = 1000000"),
            "actors.retry.params.worker_count",
            "worker_count must be at most 64",
        ),
        (
            edited("batch_size = 10", "batch_size = 100000"),
            "actors.retry.params.batch_size",
            "batch_size must be at most 1,000",
        ),
        (
            edited("mailbox_size = 1000", "mailbox_size = 999999999"),
            "actors.sql-gateway.mailbox_size",
            "mailbox_size must be at most 1,000,000",
        ),
        (
            edited("retention_days = 7.0", "retention_days = 1e308"),
            "actors.retry.params.retention_days",
            "out of range",
        ),
        (
            edited('channels = ["daz-actors"]', 'channels = ["a b"]'),
            "actors.rooms.params.channels",
            "plain channel names",
        ),
    ],
)
def test_absurd_numbers_and_bad_channels_name_the_right_key(
    text: str, path: str, reason: str
) -> None:
    """Every number has an upper bound and every error names the key that is wrong."""
    error = error_of(text)
    assert error.path == path
    assert reason in str(error)


def test_an_attempt_timeout_not_below_the_lock_timeout_is_refused() -> None:
    """attempt_timeout >= lock_timeout would cut every batch to one item: refused, saying
    why, at the policy's key."""
    text = DEFAULT + "\n[retry_policies.default]\nattempt_timeout = 300.0\n"
    error = error_of(text)
    assert error.path == "retry_policies.default.attempt_timeout"
    assert "lock_timeout (300 s)" in str(error)
    assert "one item" in str(error)
    parse_config(DEFAULT + "\n[retry_policies.default]\nattempt_timeout = 299.0\n", default_kinds())


@pytest.mark.parametrize("depth", [500, 3000])
def test_deeply_nested_toml_is_a_config_error_not_a_traceback(tmp_path: Path, depth: int) -> None:
    """`config check` on nested arrays says what is wrong, exits 1, prints no traceback."""
    path = tmp_path / "deep.toml"
    path.write_text(DEFAULT + "\n[actors.failure-log.params]\nx = " + "[" * depth + "]" * depth)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert re.search(r"Error: invalid config .*(too deeply|params)", result.output)


toml_atoms = st.sampled_from(
    ["[", "]", "{", "}", "=", ",", ".", '"', "'", "\n", " ", "#", "a", "x.y", "1", "-1",
     "1e999", "99999999999999999999", "true", "nan", "inf", "[[", "]]", "actors", "params",
     "supervisors", "tree", "root", "kind", "children", "worker_count", "lock_timeout",
     "attempt_timeout", "channels", "retry_policies", "\\u0000", "\ud800"]
)  # fmt: skip
fragments = st.lists(toml_atoms | st.text(max_size=3), max_size=40).map("".join)
lines = DEFAULT.splitlines(keepends=True)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """The shipped config with a few lines replaced by generated TOML-ish fragments."""
    out = list(lines)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(out) - 1))
        keep = out[at].split("=")[0] + "= " if "=" in out[at] and draw(st.booleans()) else ""
        out[at] = keep + draw(fragments) + "\n"
    return "".join(out)


@given(mutated_configs() | fragments)
def test_no_generated_config_raises_anything_but_a_config_error(text: str) -> None:
    """Whatever the file holds, parsing it succeeds or raises ConfigError."""
    error: ConfigError | None = None
    try:
        parse_config(text, default_kinds())
    except ConfigError as exc:
        error = exc
    assert error is None or str(error)
