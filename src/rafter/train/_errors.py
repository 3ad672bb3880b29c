"""Errors raised by ``fit()``.

    TrainingFailedError            the run failed; the message opens with the root cause
     ├── WorkerGroupError          a worker failed (and the failure policy allows no more restarts)
     ├── ControllerError           rafter could not run a group: it could not be placed or started
     │                             (e.g. a restart after a node was lost, with no capacity left)
     ├── PreemptionError           the run was stopped from outside (SIGTERM to the driver, a first
     │                             Ctrl-C) or ran out of max_preemption_failures; run it again to resume
     └── (fields) kind, rank, pid, host, evidence, failures, attempt_errors, log_dir

``kind`` is a :class:`FailureKind` (a ``str``: ``err.kind == "oom"`` works). The error pickles with
all its fields, so callbacks, the CLI and other processes can read them.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, List, Optional


class FailureKind(enum.StrEnum):
    """What failed. The first ten come from a worker (the verdict's root cause), the rest from rafter."""

    EXCEPTION = "exception"  # the train function raised
    EXIT = "exit"  # sys.exit(n), os._exit, or a library called exit()
    SIGNAL = "signal"  # killed by a signal rafter did not send
    CRASH = "crash"  # a native crash (SIGSEGV, SIGABRT, ...)
    OOM = "oom"  # out of memory (rafter's limit, the machine's threshold, or the kernel OOM killer)
    HANG = "hang"  # no progress for hang_timeout_s
    SERIALIZATION = "serialization"  # the train function, its config or its return value can't be pickled
    LOST_NODE = "lost_node"  # the rank's Ray node left the cluster
    STARTUP = "startup"  # the worker failed before the train function ran
    STOPPED = "stopped"  # rafter stopped the rank (after another rank failed)
    PLACEMENT = "placement"  # the backend could not place or start the attempt's workers
    INTERRUPTED = "interrupted"  # Ctrl-C (KeyboardInterrupt) in the driver
    PREEMPTED = "preempted"  # stopped from outside with a notice (SIGTERM, a first Ctrl-C): run again to resume
    INTERNAL = "internal"  # rafter's driver failed (see the chained exception)
    CHECKPOINT = "checkpoint"  # ranks sent different files under one name into a checkpoint


def _kind(kind: str) -> Any:
    try:
        return FailureKind(kind)
    except ValueError:
        return kind


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
        self.kind = _kind(kind)
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
    """rafter itself could not run a group of workers: it could not be placed or started (``kind``
    ``"placement"``), the driver was interrupted, or it failed. ``attempt_errors`` holds the first line of
    each earlier attempt's failure; the exception that stopped the run is chained (``__cause__``)."""


class PreemptionError(TrainingFailedError):
    """The run was preempted: stopped from outside with a notice (SIGTERM to the driver, a first Ctrl-C), or
    a worker's preemption exceeded ``FailureConfig(max_preemption_failures)``. The workers had the window to
    report a checkpoint; running the same script again (same ``RunConfig(name, storage_path)``) resumes from
    it. ``preemption_info`` says who was preempted and the deadline; ``drain_timed_out`` is True when the
    workers were stopped at the deadline rather than after their checkpoint (Ray Train's fields)."""

    def __init__(self, message: str, *, preemption_info: Any = None, drain_timed_out: bool = False,
                 **fields: Any) -> None:
        fields.setdefault("kind", FailureKind.PREEMPTED)
        super().__init__(message, **fields)
        self.preemption_info = preemption_info
        self.drain_timed_out = drain_timed_out

    def _fields(self) -> Dict[str, Any]:
        return dict(super()._fields(), preemption_info=self.preemption_info, drain_timed_out=self.drain_timed_out)
