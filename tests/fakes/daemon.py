"""Running ``janitor run`` as systemd would: a real subprocess and a real notify socket.

* :class:`NotifySocket` is systemd's side of sd_notify(3): an AF_UNIX datagram socket whose
  path goes into ``NOTIFY_SOCKET``; it collects every message the daemon sends.
* :class:`DaemonProcess` starts ``python -m janitor -c CONFIG run`` with that environment,
  logs to a file (shown when a test fails) and is always stopped, also on failure.
* :class:`SilentServer` is a provider that never answers: it accepts TCP connections on
  loopback and holds them open without a byte.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HANG_GUARD = 30.0  # seconds; only ever a guard against a hung test, never an assertion


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode()


def wait_until(
    condition: Callable[[], Any], what: str, *, timeout: float = HANG_GUARD, every: float = 0.1
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after the hang guard."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class NotifySocket:
    """The receiving end of sd_notify: a datagram socket at a short path."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="jn-", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def receive(self, timeout: float) -> str | None:
        """The next message, or None after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        message = data.decode()
        self.messages.append(message)
        return message

    def wait_for(self, field: str, *, timeout: float = HANG_GUARD) -> str:
        """Wait for a message with a line starting with ``field`` (e.g. ``READY=1``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and any(line.startswith(field) for line in message.splitlines()):
                return message
        raise AssertionError(f"no {field} within {timeout}s; got {self.messages[-10:]}")

    def collect(self, seconds: float) -> list[str]:
        """Every message that arrives within the next ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def drain(self) -> list[str]:
        """Every message already queued."""
        return self.collect(0.05)

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self._dir)


class DaemonProcess:
    """``janitor -c CONFIG run`` in a subprocess; see :func:`running_daemon`."""

    def __init__(self, config: Path, env: Mapping[str, str], log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "janitor", "-c", str(config), "run"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.proc.pid

    def log(self) -> str:
        """Everything the daemon wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """The daemon's log lines that are JSON objects (``log_format = "json"``)."""
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    def terminate(self) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL after the hang guard)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon ignored SIGTERM:\n{self.log()[-4000:]}") from None

    def close(self) -> None:
        """Make sure the process is gone and the log file closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def daemon_env(notify: NotifySocket | None = None, **extra: str) -> dict[str, str]:
    """The test process's environment plus NOTIFY_SOCKET and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JANITOR_", "SENTRY_"))}
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.path
    env.update(extra)
    return env


@contextmanager
def running_daemon(config: Path, env: Mapping[str, str], log_path: Path) -> Iterator[DaemonProcess]:
    """Start the daemon; on the way out kill it if still running and show its log on error."""
    daemon = DaemonProcess(config, env, log_path)
    try:
        yield daemon
    except BaseException:
        sys.stderr.write(f"--- janitor daemon log ---\n{daemon.log()[-8000:]}\n")
        raise
    finally:
        daemon.close()


class SilentServer:
    """A TCP server on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._thread.join()
        for conn in self._conns:
            conn.close()
        self.sock.close()
