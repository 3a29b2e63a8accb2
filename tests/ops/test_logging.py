"""Log output: JSON lines, the console format, extras, and secret redaction everywhere."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from daz_actors.ops import logging as _logging
from daz_actors.ops.logging import (
    configure_logging,
    redact,
    register_dsn_password,
    register_secret,
)
from daz_actors.runtime import redaction
from daz_actors.storage.embedded_pg import redact_dsn

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
log = logging.getLogger("daz_actors.test")


class TtyStream(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give each test no registered secrets and put the root logger back afterwards."""
    monkeypatch.setattr(redaction, "_SECRETS", redaction._Secrets())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def json_logging() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level=logging.DEBUG, json=True, stream=stream)
    return stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def raise_with(text: str) -> None:
    try:
        raise KeyError("inner " + text)
    except KeyError as exc:
        raise RuntimeError("outer " + text) from exc


def test_json_lines_have_the_documented_shape() -> None:
    """Each record is one JSON object per line with ts, level, logger and the formatted event."""
    stream = json_logging()
    log.info("item %d succeeded", 7)
    log.warning("multi\nline")
    first, second = records(stream)
    assert set(first) == {"ts", "level", "logger", "event"}
    assert TS.match(first["ts"])
    assert first["level"] == "INFO"
    assert first["logger"] == "daz_actors.test"
    assert first["event"] == "item 7 succeeded"
    assert second["event"] == "multi\nline"


def test_level_filters_records() -> None:
    """Records below the configured level are not written."""
    stream = io.StringIO()
    configure_logging(level=logging.WARNING, json=True, stream=stream)
    log.info("quiet")
    log.warning("loud")
    assert [r["event"] for r in records(stream)] == ["loud"]


def test_console_format_when_json_is_false() -> None:
    """json=False gives a readable line with time, level, logger, message and the extras."""
    stream = io.StringIO()
    configure_logging(level=logging.INFO, json=False, stream=stream)
    log.warning("room %s joined", "r1", extra={"actor": "rooms", "channel": "r1"})
    line = stream.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARNING  daz_actors\.test: room r1 joined"
        r" \[actor=rooms channel=r1\]",
        line,
    ), line


def test_format_follows_the_terminal_when_json_is_none() -> None:
    """Without `json`, a terminal gets the console format and anything else JSON."""
    tty, pipe = TtyStream(), io.StringIO()
    configure_logging(level=logging.INFO, stream=tty)
    log.info("hello")
    configure_logging(level=logging.INFO, stream=pipe)
    log.info("hello")
    assert not tty.getvalue().startswith("{")
    assert records(pipe)[0]["event"] == "hello"


def test_extras_are_carried_in_a_fixed_order() -> None:
    """The structured extras come out as fields, known ones first, others after."""
    stream = json_logging()
    extra = {"attempt": 2, "error": "boom", "correlation_id": "c-1", "actor": "worker-1"}
    extra |= {"event_id": 42, "channel": "r1", "error_type": "OSError"}
    log.warning("failed", extra=extra)
    (rec,) = records(stream)
    assert list(rec)[4:] == [*_logging.FIELDS, "attempt"]
    assert {k: rec[k] for k in extra} == extra


def test_unserialisable_extras_become_their_repr() -> None:
    """An extra JSON cannot hold is written as its repr, inside containers too."""

    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    stream = json_logging()
    log.info("x", extra={"actor": Thing(), "nested": {"a": (1, Thing()), 3: {4.5}}})
    (rec,) = records(stream)
    assert rec["actor"] == "<thing>"
    assert rec["nested"] == {"a": [1, "<thing>"], "3": [4.5]}


def test_exception_fields() -> None:
    """exc_info gives `exc` (the traceback, chained causes too), `error_type` and `error`."""
    stream = json_logging()
    try:
        raise_with("x")
    except RuntimeError:
        log.exception("attempt failed")
    (rec,) = records(stream)
    assert rec["error_type"] == "RuntimeError"
    assert rec["error"] == "outer x"
    assert rec["exc"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'inner x'" in rec["exc"]
    assert rec["exc"].endswith("RuntimeError: outer x")


def test_explicit_error_fields_win_over_the_exception() -> None:
    """error and error_type given in extra are kept even with exc_info."""
    stream = json_logging()
    try:
        raise ValueError("v")
    except ValueError:
        log.error("e", exc_info=True, extra={"error": "mine", "error_type": "Mine"})
    (rec,) = records(stream)
    assert (rec["error"], rec["error_type"]) == ("mine", "Mine")


def test_configuring_twice_does_not_duplicate_handlers() -> None:
    """A second configure_logging replaces the first handler: one line per record."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level=logging.INFO, json=True, stream=first)
    configure_logging(level=logging.INFO, json=True, stream=second)
    log.info("once")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, _logging._Handler)]
    assert len(ours) == 1
    assert first.getvalue() == ""
    assert [r["event"] for r in records(second)] == ["once"]


def test_bad_format_args_do_not_raise() -> None:
    """The filter turns a message whose args do not fit into text instead of raising."""
    register_secret("pw-9")
    record = logging.makeLogRecord({"msg": "%d items", "args": ("many pw-9",)})
    assert _logging.RedactingFilter().filter(record)
    event = json.loads(_logging.JsonFormatter().format(record))["event"]
    assert event == "'%d items' % ('many ***',)"


@pytest.mark.parametrize(
    ("dsn", "kept"),
    [
        ("postgresql://bot:pw-1@db.local:5432/daz", "postgresql://bot:***@db.local:5432/daz"),
        ("postgres://bot:p@ss-1@db/daz", "postgres://bot:***@db/daz"),
        ("postgresql://:pw-1@db/daz", "postgresql://:***@db/daz"),
        ("postgresql://db/daz?user=bot&password=pw-1&ssl=1", "password=***&ssl=1"),
        ("host=db user=bot password=pw-1 dbname=daz", "password=*** dbname=daz"),
        ("host=db password='pw 1' dbname=daz", "password=*** dbname=daz"),
    ],
)
def test_redact_covers_dsn_forms_inside_text(dsn: str, kept: str) -> None:
    """DSN passwords are redacted inside longer text, agreeing with redact_dsn."""
    text = redact(f"connecting to {dsn} now")
    assert "pw" not in text
    assert "ss-1" not in text
    assert kept in text
    assert text.endswith(" now")
    assert "pw" not in redact_dsn(dsn)


def test_dsn_password_in_the_message_and_in_args_is_redacted() -> None:
    """A DSN in the message text or passed as an argument loses its password."""
    stream = json_logging()
    log.warning("lost postgresql://bot:pw-msg@db/daz")
    log.warning("lost %s (%r)", "postgresql://bot:pw-arg@db/daz", ["password=pw-kv"])
    text = stream.getvalue()
    assert "pw-" not in text
    assert [r["event"] for r in records(stream)] == [
        "lost postgresql://bot:***@db/daz",
        "lost postgresql://bot:***@db/daz (['password=***",  # the value runs to a space
    ]


def test_registered_secret_in_an_exception_is_redacted() -> None:
    """A registered secret in an exception message (and its cause) is absent from the line."""
    register_secret("chat-pw-123")
    stream = json_logging()
    try:
        raise_with("chat-pw-123")
    except RuntimeError:
        log.exception("login failed")
    (rec,) = records(stream)
    assert "chat-pw-123" not in stream.getvalue()
    assert rec["error"] == "outer ***"
    assert "KeyError: 'inner ***'" in rec["exc"]


def test_registered_secret_in_extras_and_nested_structures_is_redacted() -> None:
    """A registered secret in an extra, a nested container, a dict key or a repr is replaced."""

    class Creds:
        def __repr__(self) -> str:
            return "Creds(password='sekr1t')"

    register_secret("sekr1t")
    stream = json_logging()
    log.info(
        "login %s",
        {"pw": "sekr1t"},
        extra={"error": "bad sekr1t", "ctx": {"sekr1t": [("a", "xsekr1tx")], "c": Creds()}},
    )
    (rec,) = records(stream)
    assert "sekr1t" not in stream.getvalue()
    assert rec["event"] == "login {'pw': '***'}"
    assert rec["error"] == "bad ***"
    assert rec["ctx"] == {"***": [["a", "x***x"]], "c": "Creds(password=***)"}  # redacted once


def test_registered_secret_is_redacted_in_its_quoted_forms() -> None:
    """A secret with special characters is caught percent-encoded in a URL and escaped in a repr."""
    secret = "p@ss/w'rd\\9"
    register_secret(secret)
    register_secret("")
    stream = json_logging()
    log.info("url postgresql://bot:%s@db/x", urllib.parse.quote(secret, safe=""))
    log.info("repr %r, plus %s", [secret], urllib.parse.quote_plus(secret))
    text = stream.getvalue()
    assert "w'rd" not in text
    assert "w%27rd" not in text
    assert "rd\\" not in text
    assert "ss/w" not in text


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://bot:Pw%2Fx-7@db/daz",
        "postgresql://db/daz?password=Pw/x-7",
        "host=db password='Pw/x-7' user=bot",
        "host=db password=Pw/x-7",
    ],
)
def test_register_dsn_password_registers_the_decoded_password(dsn: str) -> None:
    """The password of a URL or key=value DSN is registered, so it is redacted on its own."""
    register_dsn_password(dsn)
    register_dsn_password(None)
    assert redact("saw Pw/x-7 and Pw%2Fx-7") == "saw *** and ***"


def test_a_subprocess_never_writes_a_registered_secret() -> None:
    """A real process that logs a registered secret every which way leaves no trace of it."""
    token = secrets.token_hex(12)
    secret = f"Chat'Pw\\{token}"
    script = textwrap.dedent(
        f"""
        import logging, sys, urllib.parse
        from daz_actors.ops.logging import configure_logging, register_secret
        secret = {secret!r}
        configure_logging(level=logging.DEBUG, json=True)
        register_secret(secret)
        log = logging.getLogger("daz_actors.demo")
        log.info("password is " + secret)
        log.info("password is %s, again %r", secret, (secret,))
        log.warning("db %s", "postgresql://bot:" + urllib.parse.quote(secret) + "@h/db")
        log.warning("kv host=h password=%s dbname=d", secret)
        log.error("extra", extra={{"error": secret, "ctx": {{"k": [secret, {{secret: 1}}]}}}})
        try:
            try:
                raise ValueError("inner " + secret)
            except ValueError as exc:
                raise RuntimeError(secret) from exc
        except RuntimeError:
            log.exception("failed with %s", secret, stack_info=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 6
    for line in lines:
        json.loads(line)
    assert token not in done.stderr
    assert done.stderr.count("***") >= 10


def test_the_json_formatter_alone_redacts_extras() -> None:
    """Without `RedactingFilter` (another handler using `JsonFormatter`) the formatter
    redacts the extras itself; after the filter its marker is not an extra."""
    register_secret("f0rmatter-only")
    fields = {"msg": "plain", "levelno": logging.INFO, "levelname": "INFO"}
    record = logging.makeLogRecord({**fields, "ctx": "x f0rmatter-only"})
    assert json.loads(_logging.JsonFormatter().format(record))["ctx"] == "x ***"
    filtered = logging.makeLogRecord({**fields, "ctx": "y f0rmatter-only"})
    assert _logging.RedactingFilter().filter(filtered)
    doc = json.loads(_logging.JsonFormatter().format(filtered))
    assert doc["ctx"] == "y ***"
    assert "daz_redacted" not in doc
