"""Events a worker group hands to the controller (the same on every backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class Hello:
    rank: int
    pid: int
    host: str
    time: float


@dataclass
class Reported:
    rank: int
    index: int
    metrics: dict
    checkpoint: Optional[dict]
    time: float


@dataclass
class Finished:
    """The train function returned; ``value`` is its cloudpickled return value."""

    rank: int
    value: bytes
    time: float


@dataclass
class Errored:
    """The worker caught an exception (or SystemExit) and reported it before exiting."""

    rank: int
    record: dict


@dataclass
class Exited:
    """The worker process is gone. ``exit_code`` or ``signal`` tells how."""

    rank: int
    exit_code: Optional[int]
    signal: Optional[int]
    time: float
    killed_by_rafter: bool = False
    reason: Optional[str] = None  # set when rafter stopped it (e.g. "memory limit")


@dataclass
class Progress:
    """A rank showed life without reporting (e.g. a collective call), for hang detection."""

    rank: int
    time: float
    where: Any = None


@dataclass
class StorageRequest:
    """A worker asks the driver to copy files to or from storage that only the driver's process can see
    (fsspec ``memory://``). ``op`` is "upload" (local folder -> storage) or "download" (storage -> local)."""

    rank: int
    op: str
    source: str
    dest: str
