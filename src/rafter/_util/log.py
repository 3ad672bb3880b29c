"""The driver's ``rafter`` logger: one plain line per message on stderr, unless the user configured logging."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("rafter")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (pytest and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_driver_logging() -> None:
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("[rafter] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
