"""Following a growing log file (`tail -F`), across rotation and truncation.

`FileTail(path).lines()` yields every complete line of the file from its start, then each
line as it is appended. Only whole lines (ending in a newline) are yielded; a partial line
waits for the rest. When the file at `path` is replaced (rotation: its inode or device
changed), the old file is read to its end first (a writer such as Asterisk may still append
to it until it reopens its log), then the new file is read from its start. When the file
shrinks below the read position (truncation in place, e.g. logrotate's `copytruncate`),
reading restarts at its start; a truncation followed by a rewrite to a larger size before
the next poll cannot be seen, as with `tail -F`. A missing file (between a rename and the
creation of the new file) is waited for. Polling, not inotify: `poll_s` seconds between
checks when the file is idle.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16


class FileTail:
    """A followed file; `rotations` and `truncations` count what was detected."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_s: float = 0.25,
        stop: threading.Event | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.stop = stop or threading.Event()
        self.on_idle = on_idle
        self.rotations = 0
        self.truncations = 0

    def lines(self) -> Iterator[str]:
        """Lines, each ending in a newline; returns at the first idle poll after `stop` is
        set. The file must exist when the first line is requested (FileNotFoundError)."""
        handle = self.path.open("rb")
        try:
            identity = _identity(os.fstat(handle.fileno()))
            buffer = b""
            while True:
                chunk = handle.read(CHUNK_BYTES)
                if chunk:
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        yield raw.decode("utf-8", errors="replace") + "\n"
                    continue
                # At the end of the file: was it replaced or truncated?
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                if current is not None and _identity(current) != identity:
                    yield from self._drain(handle, buffer)
                    handle.close()
                    handle = self.path.open("rb")
                    identity = _identity(os.fstat(handle.fileno()))
                    buffer = b""
                    self.rotations += 1
                    logger.info("%s was rotated; reading the new file", self.path)
                    continue
                if current is not None and current.st_size < handle.tell():
                    handle.seek(0)
                    buffer = b""
                    self.truncations += 1
                    logger.info("%s was truncated; reading from its start", self.path)
                    continue
                if self.on_idle is not None:
                    self.on_idle()
                if self.stop.wait(self.poll_s):
                    return
        finally:
            handle.close()

    @staticmethod
    def _drain(handle: BinaryIO, buffer: bytes) -> Iterator[str]:
        """The rest of a rotated file, including a last line without its newline."""
        rest = buffer + handle.read()
        for raw in rest.split(b"\n"):
            if raw:
                yield raw.decode("utf-8", errors="replace") + "\n"


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino
