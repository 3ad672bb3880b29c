"""``get_all_reported_checkpoints()`` and the types it returns, with Ray Train 2.60's names."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Optional

from rafter._worker.session import require_session


class CheckpointUploadMode(Enum):
    """How ``report(checkpoint=...)`` copies this rank's checkpoint files to storage.

    SYNC: before ``report()`` returns. ASYNC: in the background; ``report()`` returns at once and the
    checkpoint is committed when every rank's upload is done. NO_UPLOAD: the checkpoint is already where
    it belongs (a folder inside the run folder on the run's storage); nothing is copied.
    """

    ASYNC = "ASYNC"
    SYNC = "SYNC"
    NO_UPLOAD = "NO_UPLOAD"

    def default_delete_local_checkpoint_after_upload(self) -> bool:
        return self == CheckpointUploadMode.ASYNC


class CheckpointConsistencyMode(Enum):
    """What ``get_all_reported_checkpoints()`` waits for: the checkpoint of this rank's latest report
    committed (COMMITTED), or committed and validated (VALIDATED; rafter has no validation step, so the same)."""

    COMMITTED = "COMMITTED"
    VALIDATED = "VALIDATED"


class ReportedCheckpointStatus(Enum):
    COMMITTED = "COMMITTED"
    PENDING_VALIDATION = "PENDING_VALIDATION"
    VALIDATED = "VALIDATED"
    VALIDATION_TIMEOUT = "VALIDATION_TIMEOUT"
    VALIDATION_FAILED = "VALIDATION_FAILED"


@dataclass
class ReportedCheckpoint:
    """A committed checkpoint of the run and the metrics rank 0 reported with it."""

    checkpoint: Any
    metrics: Dict[str, Any]
    status: ReportedCheckpointStatus


def get_all_reported_checkpoints(
    consistency_mode: CheckpointConsistencyMode = CheckpointConsistencyMode.VALIDATED,
    timeout_s: Optional[float] = None,
) -> List[ReportedCheckpoint]:
    """The run's committed checkpoints (those retention kept, oldest first), once the checkpoint of this
    rank's latest report is committed; after ``timeout_s`` seconds, whatever is committed by then."""
    if not isinstance(consistency_mode, CheckpointConsistencyMode):
        raise TypeError(
            f"rafter.train.get_all_reported_checkpoints(consistency_mode={consistency_mode!r}): expected a "
            f"CheckpointConsistencyMode, e.g. CheckpointConsistencyMode.COMMITTED."
        )
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or timeout_s < 0):
        raise ValueError(
            f"rafter.train.get_all_reported_checkpoints(timeout_s={timeout_s!r}): expected seconds >= 0 or None."
        )
    session = require_session("get_all_reported_checkpoints")
    session.drain_uploads()  # this rank's ASYNC uploads first: their checkpoints are what the caller waits for
    from rafter._worker import messages as msg

    reply = session.request(msg.CheckpointsRequest(session.spec.rank, session.report_index, timeout_s))
    assert isinstance(reply, msg.CheckpointsDone), reply
    entries = reply.entries
    if reply.error:
        raise RuntimeError(f"rafter.train.get_all_reported_checkpoints(): {reply.error}")
    from rafter.train._checkpoint import Checkpoint

    fs = session.spec.storage_filesystem
    return [ReportedCheckpoint(Checkpoint(path, filesystem=fs), metrics, ReportedCheckpointStatus.COMMITTED)
            for path, metrics in entries]
