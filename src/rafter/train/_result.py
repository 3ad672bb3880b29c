"""What ``fit()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from rafter.train._validation import check_best_checkpoint_args


@dataclass
class Result:
    """The outcome of a run.

    Attributes:
        metrics: the last metrics dict rank 0 reported (with or without a checkpoint).
        checkpoint: the latest committed checkpoint, or None.
        error: None when ``fit()`` returns (it raises on failure); set by ``Result.from_path`` for failed runs.
        path: the run folder (local path or URI).
        metrics_history: every report of rank 0, in order, across restarts, read from the run folder's
            ``metrics.jsonl`` when first used. Each entry is the metrics dict; ``attempts`` says where
            restarts happened.
        return_value: what rank 0's train function returned.
        best_checkpoints: [(checkpoint, metrics)] kept by retention, best first when a score is set.
        attempts: one dict per attempt: ``attempt`` (numbered across invocations), ``invocation`` (which run
            of the driver), ``cause`` ("start", "restart" after a failure, or "new invocation" when the driver
            was run again), ``first_report`` (its first index in ``metrics_history``) and ``error`` (first line,
            or None).
    """

    metrics: Optional[Dict[str, Any]] = None
    checkpoint: Optional[Any] = None
    error: Optional[BaseException] = None
    path: Optional[str] = None
    metrics_history: Sequence[Dict[str, Any]] = field(default_factory=list)
    return_value: Any = None
    best_checkpoints: List[Tuple[Any, Dict[str, Any]]] = field(default_factory=list)
    attempts: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def metrics_dataframe(self):
        """``metrics_history`` as a pandas DataFrame (requires pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("Result.metrics_dataframe needs pandas: pip install pandas") from exc
        return pd.DataFrame(list(self.metrics_history))

    def get_best_checkpoint(self, metric: str, mode: str = "max"):
        check_best_checkpoint_args(metric, mode)
        scored = [(c, m) for c, m in self.best_checkpoints if metric in m]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda cm: cm[1][metric])[0]

    _storage_filesystem: Any = field(default=None, repr=False)

    @property
    def filesystem(self):
        """The filesystem ``path`` is on: ``storage_filesystem`` if one was given, else pyarrow's for the path
        (fsspec's when pyarrow is not installed)."""
        from rafter._storage import public_filesystem

        return public_filesystem(self.path, self._storage_filesystem) if self.path else None

    @classmethod
    def from_path(cls, path: Union[str, os.PathLike], storage_filesystem: Any = None) -> "Result":
        """Rebuild a Result from a run folder in storage (a path on ``storage_filesystem`` when given)."""
        from rafter import _run_folder
        from rafter.train._errors import TrainingFailedError

        record = _run_folder.read(os.fspath(path), storage_filesystem)
        error = None
        if record.status == "failed":
            error = TrainingFailedError(record.error_text or record.error or "failed")
        return cls.from_record(record, error=error)

    @classmethod
    def from_record(cls, record, return_value: Any = None, error: Optional[BaseException] = None) -> "Result":
        """The Result a run folder's record describes (``rafter._run_folder.RunRecord``)."""
        from rafter import _run_folder
        from rafter._storage import Storage
        from rafter.train._checkpoint import Checkpoint

        storage = Storage(record.path, record.filesystem)
        attr = record.score.get("attribute")
        ranked = _run_folder.rank_checkpoints(record.checkpoints, attr, record.score.get("order", "max")) \
            if attr else list(record.checkpoints)

        def checkpoint(c):
            return Checkpoint(storage.join_path(record.path, c["name"]), filesystem=record.filesystem)

        return cls(
            metrics=record.last_metrics,
            checkpoint=checkpoint(record.checkpoints[-1]) if record.checkpoints else None,
            error=error,
            path=record.path,
            metrics_history=_run_folder.metrics_history(storage, record.path, record.num_reports),
            return_value=return_value,
            best_checkpoints=[(checkpoint(c), c["metrics"]) for c in ranked],
            attempts=[dict(a) for a in record.attempts],
            _storage_filesystem=record.filesystem,
        )
