"""What ``fit()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass
class Result:
    """The outcome of a run.

    Attributes:
        metrics: the last metrics dict rank 0 reported (with or without a checkpoint).
        checkpoint: the latest committed checkpoint, or None.
        error: None when ``fit()`` returns (it raises on failure); set by ``Result.from_path`` for failed runs.
        path: the run folder (local path or URI).
        metrics_history: every report of rank 0, in order, across restarts. Each entry is the metrics dict;
            ``attempts`` says where restarts happened.
        return_value: what rank 0's train function returned.
        best_checkpoints: [(checkpoint, metrics)] kept by retention, best first when a score is set.
        attempts: [{"attempt": n, "first_report": i, "error": first line or None}] one per attempt.
    """

    metrics: Optional[Dict[str, Any]] = None
    checkpoint: Optional[Any] = None
    error: Optional[BaseException] = None
    path: Optional[str] = None
    metrics_history: List[Dict[str, Any]] = field(default_factory=list)
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
        return pd.DataFrame(self.metrics_history)

    def get_best_checkpoint(self, metric: str, mode: str = "max"):
        scored = [(c, m) for c, m in self.best_checkpoints if metric in m]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda cm: cm[1][metric])[0]

    @classmethod
    def from_path(cls, path: str) -> "Result":
        """Rebuild a Result from a run folder in storage."""
        from rafter._controller.run_state import load_result

        return load_result(path)
