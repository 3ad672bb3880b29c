"""The callback interface for trackers and custom hooks. Every hook is optional; they run on the driver."""

from __future__ import annotations

from typing import Any, Dict


class Callback:
    """Subclass and override what you need; pass instances in ``RunConfig(callbacks=[...])``."""

    def on_attempt_start(self, *, attempt: int, num_workers: int, run_path: str) -> None:
        """Before the workers of an attempt start (attempt 1, then once per restart)."""

    def after_report(self, *, metrics: Dict[str, Any], rank: int, run_path: str) -> None:
        """After each report of rank 0."""

    def on_checkpoint(self, *, checkpoint, metrics: Dict[str, Any], run_path: str) -> None:
        """After a checkpoint is committed (visible in storage)."""

    def on_failure(self, *, error, run_path: str) -> None:
        """After an attempt fails (before a restart, or before ``fit()`` raises)."""

    def on_end(self, *, result, run_path: str) -> None:
        """When the run ends, successfully (``result.error is None``) or not."""
