"""A secret kept in a file (``password_file``, ``client_secret_file``), re-read when it changes.

The file is read again when its modification time or size changes, and on demand (after the
provider rejected the secret), so a rotated credential is picked up without a restart. Reading
is blocking file I/O: async callers run :meth:`SecretFile.read` in a thread. The secret never
appears in a repr, a log line or an error message; errors name the key and the path only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from janitor.errors import AuthFailed


class SecretFile:
    """The content of ``path`` (stripped), cached until the file changes."""

    def __init__(self, path: Path, *, key: str, target: str) -> None:
        self._path = path
        self._key = key
        self._target = target
        self._stamp: tuple[int, int] | None = None
        self._cached: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SecretFile {self._key}={self._path}>"

    def read(self, *, force: bool = False) -> str:
        """The secret; the file is read again when it changed, or always with ``force``.

        Raises:
            AuthFailed: the file cannot be read or is empty (the target cannot authenticate).
        """
        with self._lock:
            try:
                stat = os.stat(self._path)
                stamp = (stat.st_mtime_ns, stat.st_size)
                if force or stamp != self._stamp or self._cached is None:
                    text = self._path.read_text(encoding="utf-8").strip()
                    self._cached, self._stamp = text, stamp
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise AuthFailed(
                    f"{self._key} {self._path} cannot be read: {why}", target=self._target
                ) from None
            if not self._cached:
                raise AuthFailed(f"{self._key} {self._path} is empty", target=self._target)
            return self._cached
