"""A worker's stdout/stderr on the driver: whole lines echoed with a prefix, raw bytes kept in the
rank's log file, and the last lines kept for the verdict. The same on every backend."""

from __future__ import annotations

import collections
import os
import sys
from typing import Deque, Dict, List

from rafter._storage import open_fd

LOG_TAIL_LINES = 120  # a crash dump has every thread, and a forked worker inherits its parent's frames


class RankOutput:
    def __init__(self, log_path: str, prefix: str, echo: bool = True) -> None:
        self.log = os.fdopen(open_fd(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), "ab", buffering=0)
        self.prefix = prefix
        self.echo = echo
        self.tail: Deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._partial: Dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._out = {"stdout": sys.stdout, "stderr": sys.stderr}  # as they were when the group started

    def note(self, text: str) -> None:
        """A line of rafter's own in the log file (e.g. "=== attempt 2, pid 123 ===")."""
        self.log.write(f"=== {text} ===\n".encode())

    def write(self, stream: str, chunk: bytes) -> None:
        self.log.write(chunk)
        data = self._partial[stream] + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial[stream] = data
            return
        self._partial[stream] = data[cut + 1 :]
        self._emit(stream, data[: cut + 1])

    def flush(self, stream: str = None) -> None:
        """Emit what is left of an unterminated last line (the stream ended)."""
        for name in [stream] if stream else list(self._partial):
            if self._partial[name]:
                data, self._partial[name] = self._partial[name], b""
                self._emit(name, data + b"\n")

    def lines(self) -> List[str]:
        return list(self.tail)

    def close(self) -> None:
        self.log.close()

    def _emit(self, stream: str, data: bytes) -> None:
        lines = data.decode("utf-8", "replace").splitlines()
        self.tail.extend(lines)
        if self.echo:
            target = self._out[stream]
            target.write("".join(self.prefix + line + "\n" for line in lines))
            target.flush()
