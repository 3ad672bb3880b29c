"""Calls Ray's :class:`~rafter.train.UserCallback` hooks from the run's reports and failures.

``after_report`` fires once every rank's report with the same index has arrived (Ray: once all workers
reported), after that report's checkpoint, if any, was committed.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from rafter.train._callback import TrainRunContext, UserCallback

logger = logging.getLogger("rafter")


def rafter_callbacks(callbacks) -> List[Any]:
    """The callbacks that take rafter's own hooks (UserCallbacks have Ray's signatures instead)."""
    return [c for c in callbacks or [] if not isinstance(c, UserCallback)]


class UserCallbacks:
    def __init__(self, callbacks: List[UserCallback], run_context: TrainRunContext) -> None:
        self.callbacks = callbacks
        self.run_context = run_context
        self._pending: Dict[tuple, Dict[int, dict]] = {}

    @classmethod
    def for_run(cls, trainer) -> "UserCallbacks":
        run_config = trainer.run_config
        context = TrainRunContext(
            run_config=run_config,
            train_loop_config=trainer.train_loop_config,
            scaling_config=trainer.scaling_config,
            backend_config=trainer.torch_config,
            dataset_config=getattr(trainer, "dataset_config", None),
        )
        return cls([c for c in run_config.callbacks or [] if isinstance(c, UserCallback)], context)

    def on_report(self, event, state) -> list:
        """Hand ``event`` (a rank's report) to the run state, then call ``after_report`` when it completes
        a report of every rank. Returns what ``state.on_report`` returns (the checkpoints it committed)."""
        done = state.on_report(event)
        if not self.callbacks:
            return done
        key = (len(state.attempts), event.index)
        reports = self._pending.setdefault(key, {})
        reports[event.rank] = event.metrics
        if len(reports) < state.world_size:
            return done
        del self._pending[key]
        checkpoint = state.checkpoint(done[-1]) if done else None
        metrics = [reports[r] for r in sorted(reports)]
        for cb in self.callbacks:
            cb.after_report(self.run_context, metrics, checkpoint)
        return done

    def after_exception(self, worker_exceptions: Dict[int, BaseException]) -> None:
        for cb in self.callbacks:
            cb.after_exception(self.run_context, worker_exceptions)


def worker_exceptions(outcomes, verdict) -> Dict[int, BaseException]:
    """Each failed rank's exception: the one it raised when it pickled, else one describing how it ended."""
    import cloudpickle

    headlines = {f["rank"]: f.get("headline", "failed") for f in getattr(verdict, "failures", [])}
    out: Dict[int, BaseException] = {}
    for rank in sorted(outcomes):
        o = outcomes[rank]
        if not o.failed or (o.killed_by_rafter and o.error is None):
            continue
        exc = None
        if o.error is not None and o.error.get("pickled"):
            try:
                exc = cloudpickle.loads(o.error["pickled"])
            except Exception:  # noqa: BLE001 - the driver may lack the exception's module
                exc = None
        if exc is None:
            exc = RuntimeError(f"Rank {rank} {headlines.get(rank, 'failed')}")
        out[rank] = exc
    return out
