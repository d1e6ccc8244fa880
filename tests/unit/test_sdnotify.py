"""sd_notify against real datagram sockets (path and abstract), and WATCHDOG_* parsing."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from janitor.observability.sdnotify import notify, watchdog_interval
from tests.fakes.daemon import NotifySocket


@pytest.fixture
def path_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    yield sock
    sock.close()


def test_path_socket_gets_one_datagram_per_call(path_socket: NotifySocket) -> None:
    assert notify("READY=1", "STATUS=ready; first sweep running") is True
    assert notify("WATCHDOG=1") is True
    assert path_socket.receive(5) == "READY=1\nSTATUS=ready; first sweep running"
    assert path_socket.receive(5) == "WATCHDOG=1"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"janitor-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_no_op_without_notify_socket() -> None:
    assert "NOTIFY_SOCKET" not in os.environ
    assert notify("READY=1") is False


@pytest.mark.parametrize("address", ["", "vsock:2:1234", "relative/path"])
def test_unsupported_addresses_are_ignored(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify("READY=1") is False


def test_a_missing_socket_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"/tmp/janitor-missing-{uuid.uuid4().hex}")
    with caplog.at_level(logging.WARNING):
        assert notify("READY=1") is False
    assert "sd_notify failed" in caplog.text


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("60000000", None, 30.0),
        ("1000000", "self", 0.5),
        ("1000000", "other", None),
        ("0", None, None),
        ("abc", None, None),
        ("-5", None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() if pid == "self" else os.getpid() + 1))
    assert watchdog_interval() == expected
