"""Helpers for tests that drive a real child process (a driver script, `python -m rafter run`)."""

import os
import selectors
import time


def read_until(proc, needle: str, timeout: float = 120) -> str:
    """The child's stdout up to the first chunk holding ``needle``; fails if it ends or the time runs out."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
    text, deadline = "", time.monotonic() + timeout
    try:
        while needle not in text:
            assert time.monotonic() < deadline, f"no {needle!r} in time:\n{text}"
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"the process ended before {needle!r}:\n{text}"
                text += chunk.decode()
    finally:
        sel.close()
    return text
