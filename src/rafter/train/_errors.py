"""Errors raised by ``fit()``.

    TrainingFailedError            the run failed; the message opens with the root cause
     └── (fields) kind, rank, pid, host, evidence, failures, attempt_errors, log_dir

``kind`` is one of: "exception", "exit", "signal", "crash", "oom", "hang", "serialization",
"lost_node", "startup". The error pickles with all its fields, so callbacks, the CLI and other
processes can read them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class TrainingFailedError(RuntimeError):
    """The training run failed. ``str(err)`` is the full verdict; the structured fields say the same."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "exception",
        rank: Optional[int] = None,
        pid: Optional[int] = None,
        host: Optional[str] = None,
        evidence: Optional[Dict[str, Any]] = None,
        failures: Optional[List[Dict[str, Any]]] = None,
        attempt_errors: Optional[List[str]] = None,
        log_dir: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.rank = rank
        self.pid = pid
        self.host = host
        self.evidence = evidence or {}
        self.failures = failures or []
        self.attempt_errors = attempt_errors or []
        self.log_dir = log_dir

    @property
    def first_line(self) -> str:
        return str(self).split("\n", 1)[0]

    @property
    def worker_failures(self) -> Dict[int, Dict[str, Any]]:
        """Each failed rank's record, keyed by rank (Ray's ``WorkerGroupError.worker_failures`` analogue)."""
        return {f["rank"]: f for f in self.failures if f.get("rank") is not None}

    def _fields(self) -> Dict[str, Any]:
        return dict(
            kind=self.kind, rank=self.rank, pid=self.pid, host=self.host, evidence=self.evidence,
            failures=self.failures, attempt_errors=self.attempt_errors, log_dir=self.log_dir,
        )

    def __reduce__(self):
        return (_rebuild, (type(self), str(self), self._fields()))


def _rebuild(cls, message, fields):
    return cls(message, **fields)


class WorkerGroupError(TrainingFailedError):
    """One or more workers failed (exception, exit, signal, crash, out of memory, hang)."""


class ControllerError(TrainingFailedError):
    """rafter itself could not run the group (startup, backend, infeasible resources)."""
