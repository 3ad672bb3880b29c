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


@dataclass
class CollectiveRequest:
    """A rank entered ``rafter.train.collective.barrier()`` or ``broadcast_from_rank_zero()`` (its
    ``seq``-th collective call); ``data`` is rank 0's cloudpickled value for a broadcast, else None."""

    rank: int
    seq: int
    op: str
    data: Optional[bytes]


@dataclass
class DatasetRequest:
    """A rank's first ``rafter.train.get_dataset_shard()``: it asks for its Ray Data shards."""

    rank: int


@dataclass
class CheckpointsRequest:
    """A rank called ``rafter.train.get_all_reported_checkpoints()`` after ``num_reports`` reports of its own."""

    rank: int
    num_reports: int
    timeout_s: Optional[float]


def from_message(rank: int, message: tuple):
    """The event for a worker's channel message, or None for messages a backend handles itself
    (``rdzv``: rank 0's store address, which the backend forwards to the other ranks)."""
    kind = message[0]
    if kind == "report":
        _, index, metrics, checkpoint, t = message
        return Reported(rank, index, metrics, checkpoint, t)
    if kind == "hello":
        _, _, pid, host, t = message
        return Hello(rank, pid, host, t)
    if kind == "done":
        _, value, t = message
        return Finished(rank, value, t)
    if kind == "error":
        return Errored(rank, message[1])
    if kind == "storage":
        _, op, source, dest = message
        return StorageRequest(rank, op, source, dest)
    if kind == "collective":
        _, seq, op, data = message
        return CollectiveRequest(rank, seq, op, data)
    if kind == "reported_checkpoints":
        return CheckpointsRequest(rank, message[1], message[2])
    if kind == "datasets":
        return DatasetRequest(rank)
    if kind == "progress":
        return Progress(rank, message[1], message[2] if len(message) > 2 else None)
    return None
