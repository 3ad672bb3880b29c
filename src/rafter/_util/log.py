"""The driver's ``rafter`` logger: one plain line per message on stderr, unless the user configured logging."""

from __future__ import annotations

import logging
import sys
from typing import Optional

logger = logging.getLogger("rafter")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (pytest and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_driver_logging(level: Optional[str] = None) -> None:
    """``level``: ``LoggingConfig(log_level)`` when the user gave one. Without it, a level the user set on
    the ``rafter`` logger stands; INFO when nobody set one and rafter prints its own lines."""
    if level is not None:
        logger.setLevel(level)
    if logger.handlers or logging.getLogger().handlers:
        return  # the user configured logging: their handlers and levels decide
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("[rafter] %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False
