"""Every message between a worker and the driver, defined once. Pickled as they are over the channel.

Worker -> driver (each names its sender's ``rank``; the driver believes the channel, not the field):
    Hello, Rendezvous (rank 0 only), Reported, StorageRequest, CollectiveRequest, DatasetRequest,
    CheckpointsRequest, PreemptNotice, CollectivesSummary, Finished | Errored
Driver -> worker:
    Payload (first, local backend), Rendezvous (to ranks other than 0),
    StorageDone, CollectiveDone, DatasetsDone and CheckpointsDone (each answers the worker's request)

The worker-to-driver records are also the controller's events (``rafter._backends.events``), so a
field added here reaches the controller without anything unpacking it by position.
"""

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
    checkpoint: Optional[dict]  # {"staging", "files", "rank"} when this rank staged files
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
    record: dict  # see rafter._worker.records.exception_record


@dataclass
class StorageRequest:
    """A worker asks the driver to copy files to or from storage that only the driver's process can see
    (fsspec ``memory://``). ``op`` is "upload" (local folder -> storage) or "download" (storage -> local)."""

    rank: int
    op: str
    source: str
    dest: str


@dataclass
class Rendezvous:
    """Rank 0's TCPStore address; the backend relays it to the other ranks."""

    host: str
    port: int


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


@dataclass
class PreemptNotice:
    """A SIGTERM reached this worker from outside rafter at ``time`` (see ``rafter._worker.preemption``)."""

    rank: int
    time: float


@dataclass
class CollectivesSummary:
    """This rank's progress through its collectives (``rafter._worker.collectives.summarize``), sent when it
    raises or returns and when the driver asks; the verdict compares the ranks'."""

    rank: int
    summary: dict


@dataclass
class StorageDone:
    """The driver's answer to a ``StorageRequest``: what the copy returned (an upload's manifest), or the
    error that stopped it."""

    value: Any = None
    error: Optional[str] = None


@dataclass
class CollectiveDone:
    """The driver's answer to call ``seq`` once every rank made it: rank 0's data for a broadcast, or why
    the call can never complete."""

    seq: int
    data: Optional[bytes] = None
    error: Optional[str] = None


@dataclass
class Payload:
    """The cloudpickled ``(train function, config)``, sent to a worker that has no other way to get it."""

    data: bytes


@dataclass
class DatasetsDone:
    """The answer to a ``DatasetRequest``: the Ray address to join (None in-process), this rank's pickled
    shards, or why there are none."""

    address: Optional[str]
    shards: Any
    error: Optional[str] = None


@dataclass
class CheckpointsDone:
    """The answer to a ``CheckpointsRequest``: ``[(path, metrics)]`` of the committed checkpoints, oldest first."""

    entries: list
    error: Optional[str] = None
