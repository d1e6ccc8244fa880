"""Logging: JSON and text formats, sweep context on every line, journald priority prefixes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import TextIO

import pytest

from janitor.logcontext import bind
from janitor.observability.logs import JsonFormatter, setup_logging, under_journald

log = logging.getLogger("janitor.test")
NOISY = ("httpx", "httpcore", "sqlalchemy.engine", "alembic.runtime.migration", "apscheduler")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """setup_logging changes the root logger: put everything back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


@pytest.fixture
def pipe() -> Iterator[tuple[TextIO, TextIO]]:
    """(writer, reader) of an OS pipe: a stream with a real device and inode."""
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    reader = os.fdopen(read_fd, "r", encoding="utf-8")
    yield writer, reader
    for stream in (writer, reader):
        if not stream.closed:
            stream.close()


def journal_stream_of(stream: TextIO) -> str:
    """The ``$JOURNAL_STREAM`` systemd would set for ``stream``: ``DEVICE:INODE``."""
    stat = os.fstat(stream.fileno())
    return f"{stat.st_dev}:{stat.st_ino}"


def detach_and_close(stream: TextIO) -> None:
    """Remove janitor's handler (so nothing writes to ``stream`` any more), then close it."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "janitor"]:
        root.removeHandler(handler)
    stream.close()


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_time_level_logger_message_context_and_extras() -> None:
    out = io.StringIO()
    setup_logging("json", "INFO", stream=out)
    with bind(sweep_id="6f1c2b3a-0000-4000-8000-000000000001", target="notebooks"):
        log.info("deleted %s after %s", "s1", "3h", extra={"policy": "idle-notebooks"})
    log.warning("outside a sweep")
    first, second = (json.loads(line) for line in lines_of(out))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert first["level"] == "info"
    assert first["logger"] == "janitor.test"
    assert first["message"] == "deleted s1 after 3h"
    assert first["sweep_id"] == "6f1c2b3a-0000-4000-8000-000000000001"
    assert first["target"] == "notebooks"
    assert first["policy"] == "idle-notebooks"
    assert (second["level"], second["sweep_id"], second["target"]) == ("warning", None, None)


def test_json_exceptions_stay_on_one_line() -> None:
    out = io.StringIO()
    setup_logging("json", "INFO", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    (line,) = lines_of(out)
    record = json.loads(line)
    assert record["level"] == "error"
    assert "Traceback" in record["exception"]
    assert "ValueError: boom" in record["exception"]


def test_text_lines_show_a_short_sweep_id_and_the_target() -> None:
    out = io.StringIO()
    setup_logging("text", "INFO", stream=out)
    with bind(sweep_id="6f1c2b3a-0000-4000-8000-000000000001", target="notebooks"):
        log.info("listed %d sessions", 4)
    log.error("no context")
    first, second = lines_of(out)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO janitor.test "
        r"\[sweep=6f1c2b3a target=notebooks\] listed 4 sessions",
        first,
    )
    assert re.fullmatch(r"\S+ \S+ ERROR janitor.test no context", second)


def test_auto_is_json_when_not_a_terminal() -> None:
    out = io.StringIO()
    setup_logging("auto", "INFO", stream=out)
    log.info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"


def test_context_follows_work_sent_to_threads() -> None:
    """Store calls run in threads (asyncio.to_thread): their lines keep the sweep context."""
    out = io.StringIO()
    setup_logging("json", "INFO", stream=out)

    async def sweep() -> None:
        with bind(sweep_id="abc", target="nb"):
            await asyncio.to_thread(log.info, "from a thread")
            await asyncio.gather(asyncio.to_thread(log.info, "from a task's thread"))

    asyncio.run(sweep())
    records = [json.loads(line) for line in lines_of(out)]
    assert [(r["sweep_id"], r["target"]) for r in records] == [("abc", "nb"), ("abc", "nb")]


def test_setup_is_idempotent_and_quiets_chatty_libraries() -> None:
    out = io.StringIO()
    setup_logging("json", "DEBUG", stream=out)
    setup_logging("json", "INFO", stream=out)
    log.info("once")
    assert len(lines_of(out)) == 1
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("sqlalchemy.engine").level == logging.WARNING


def test_journald_is_detected_by_device_and_inode(
    pipe: tuple[TextIO, TextIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, _ = pipe
    assert not under_journald(writer), "no JOURNAL_STREAM"
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(writer))
    assert under_journald(writer)
    assert not under_journald(io.StringIO()), "a stream without a file descriptor"
    device, inode = journal_stream_of(writer).split(":")
    monkeypatch.setenv("JOURNAL_STREAM", f"{device}:{int(inode) + 1}")
    assert not under_journald(writer), "stderr was redirected elsewhere"
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not under_journald(writer)


def test_journald_lines_start_with_the_syslog_priority(
    pipe: tuple[TextIO, TextIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = pipe
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(writer))
    setup_logging("json", "DEBUG", stream=writer)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    detach_and_close(writer)
    lines = reader.read().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert json.loads(lines[3][3:])["message"] == "e"


def test_journald_prefixes_every_line_of_a_traceback(
    pipe: tuple[TextIO, TextIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = pipe
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(writer))
    setup_logging("text", "INFO", stream=writer)
    try:
        raise RuntimeError("wedged")
    except RuntimeError:
        log.exception("sweep crashed")
    detach_and_close(writer)
    lines = reader.read().splitlines()
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines), lines


def test_json_formatter_renders_odd_extras_as_strings() -> None:
    record = logging.LogRecord("janitor.x", logging.INFO, __file__, 1, "m", (), None)
    record.when = object()
    assert json.loads(JsonFormatter().format(record))["when"].startswith("<object object")


def test_default_stream_is_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI runner swaps sys.stderr and closes its stream; later lines must not fail."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    setup_logging("json", "INFO")
    log.info("one")
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    log.info("two")
    assert [json.loads(line)["message"] for line in lines_of(second)] == ["two"]
