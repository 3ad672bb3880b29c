"""The per-process state behind ``rafter.train.report/get_context/get_checkpoint`` in a worker."""

from __future__ import annotations

import threading
import time
from typing import Optional

from rafter._worker import messages as msg
from rafter._worker.channel import Channel
from rafter._worker.spec import WorkerSpec

_session: Optional["WorkerSession"] = None


class WorkerSession:
    """This worker's spec and its channel to the driver; one per worker process."""

    def __init__(self, spec: WorkerSpec, channel: Channel) -> None:
        self.spec = spec
        self.channel = channel
        self.report_index = 0
        self.start_time = time.time()
        self.collective_seq = 0
        self.dataset_shards = None  # {name: DataIterator}, fetched on the first get_dataset_shard()
        self._request_lock = threading.Lock()
        self.on_progress = _nothing  # called at each report with its time (the collectives' quiet timer)

    def send(self, message) -> None:
        self.channel.send(message)

    def send_report(self, index: int, metrics: dict, staged: Optional[dict]) -> None:
        now = time.time()
        self.on_progress(now)
        message = msg.Reported(self.spec.rank, index, metrics, staged, now)
        if staged is None:
            self.channel.send_metrics(message)  # the driver reads these a little later, without a wake-up
        else:
            self.channel.send(message)

    def drain_uploads(self) -> None:
        """Wait for this worker's ASYNC checkpoint uploads (and the reports queued behind them); raise if one
        failed (see ``rafter._worker.uploads``)."""
        uploader = getattr(self, "uploader", None)
        if uploader is not None:
            uploader.drain()

    def request(self, message):
        """Send a message the driver answers (``StorageRequest``, ``CollectiveRequest``) and wait for its
        reply. One request at a time, so replies never cross between threads."""
        with self._request_lock:
            self.channel.send(message)
            return self.channel.recv()


def _nothing(now: float) -> None:
    pass


def set_session(session: Optional[WorkerSession]) -> None:
    global _session
    _session = session


def get_session() -> Optional[WorkerSession]:
    return _session


def require_session(api: str) -> WorkerSession:
    if _session is None:
        raise RuntimeError(
            f"rafter.train.{api}() can only be called inside the training function that "
            f"TorchTrainer runs on each worker (train_loop_per_worker), not in the driver script. "
            f"Move the call into your train function."
        )
    return _session
