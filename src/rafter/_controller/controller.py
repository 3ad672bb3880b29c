"""The driver's run loop: start a worker group, pump its events, decide, repeat, build the Result.

    user -> TorchTrainer.fit() -> Controller.fit() -> backend.start_group() -> workers
    workers -> events (Hello, Reported, Finished, Errored, Exited) -> Controller -> Result | error

Phases (``RunPhase``): PREPARING (check storage, pickle the train function, check resources, open the
run folder), then per attempt STARTING (the backend places and starts the workers) -> RUNNING (events
go to the run folder, the callbacks and the monitors; monitors' decisions are applied here) ->
DECIDING (success, a restart, or the end), and at last FINISHED or FAILED. Whatever ends the run,
``fit`` leaves through one exit that shuts the backend down, marks the run folder finished or failed
and calls ``on_end``.

A worker failure ends as ``WorkerGroupError`` (the verdict); an attempt that cannot be placed or
started (e.g. a restart after a node was lost) as ``ControllerError`` with the earlier attempts' errors.
The controller never touches torch; the backend never decides policy.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import cloudpickle

from rafter._backends import events as ev
from rafter._backends.base import Backend, WorkerGroup
from rafter._controller.callbacks import notify, notify_committed, notify_report
from rafter._controller.checkpoints import CheckpointConflictError
from rafter._controller.collectives import CollectiveHub
from rafter._controller import elastic
from rafter._controller.failure_policy import should_retry
from rafter._controller.preemption import PREEMPTED_REASON, DriverSignals, Preemption, PreemptionMonitor
from rafter._controller.run_state import RunState
from rafter._controller.storage_check import check_storage
from rafter._controller.user_callbacks import UserCallbacks, rafter_callbacks, worker_exceptions
from rafter._diagnose.collectives import CollectiveWatch
from rafter._diagnose.dataloader import DataLoaderWatch
from rafter._diagnose.decision import AttemptView, Note, Stop
from rafter._diagnose.hang import HangMonitor
from rafter._diagnose.memory import MemoryMonitor
from rafter._diagnose.verdict import RankOutcome, build_verdict, keep_verdict
from rafter._storage import Storage
from rafter._util.log import setup_driver_logging
from rafter._util.pickling import dumps_payload
from rafter._worker import messages as msg
from rafter._worker.spec import WorkerSpec
from rafter.train._config import RunConfig, ScalingConfig
from rafter.train._errors import ControllerError, FailureKind, PreemptionError, TrainingFailedError
from rafter.train._result import Result

logger = logging.getLogger("rafter")

FAILURE_GRACE_S = 0.5  # after the first failure, how long other ranks get to fail on their own
# The loop's longest sleep when nothing happens: monitors tick at least this often. Each wake of the
# driver takes a core from a rank for a moment, which the other ranks then wait for at their next
# collective; deadlines are kept by due(), and a silence is noticed by the ranks themselves
# (rafter._worker.collectives.Quiet), so a healthy run needs the driver about once a second.
POLL_S = 1.0
INTERRUPT_GRACE_S = 1.0


class RunPhase(enum.StrEnum):
    PREPARING = "preparing"
    STARTING = "starting"
    RUNNING = "running"
    DECIDING = "deciding"
    FINISHED = "finished"
    FAILED = "failed"


class _Attempt:
    def __init__(self, number: int, group: WorkerGroup) -> None:
        self.number = number
        self.group = group
        self.outcomes: Dict[int, RankOutcome] = {r: RankOutcome(rank=r) for r in group.ranks}
        self.first_failure: Optional[float] = None
        self.stopping = False  # the others were told to stop after the first failure
        self.return_value: Any = None
        self.monitors: List[Any] = []
        self.dues: List[Callable[[], Optional[float]]] = []  # the monitors' due() (see rafter._diagnose.decision)
        self._failed: Dict[int, None] = {}  # the failed ranks, kept by note() (a loop turn must not scan all)

    def note(self, rank: int) -> None:
        """After an event of ``rank``: keep the set of failed ranks current."""
        if self.outcomes[rank].failed:
            self._failed.setdefault(rank)
        else:
            self._failed.pop(rank, None)

    def failed_ranks(self) -> List[int]:
        return list(self._failed)

    def succeeded(self) -> bool:
        return all(o.finished for o in self.outcomes.values())


class Controller:
    """Runs one ``fit()``: attempts of a worker group on ``backend`` until success or the failure policy says stop.

    ``monitors`` are per-attempt watchers (see ``rafter._diagnose.decision``): each is called with an
    ``AttemptView`` and returns an object with ``on_event``, ``tick`` and ``close``.
    """

    def __init__(
        self,
        train_fn: Callable,
        train_loop_config: Optional[dict],
        scaling: ScalingConfig,
        run_config: RunConfig,
        backend_name: str,
        timeout_s: float,
        echo: bool = True,
        backend: Optional[Backend] = None,
    ) -> None:
        from rafter._backends import create

        self.train_fn = train_fn
        self.train_loop_config = train_loop_config
        self.requested = scaling  # an elastic request keeps its (min, max); self.scaling is the current size
        self.scaling = scaling.with_workers(scaling.min_workers) if scaling.elastic else scaling
        self.run_config = run_config
        self.backend_name = backend_name
        self.timeout_s = timeout_s
        self.echo = echo
        self.backend: Backend = backend if backend is not None else create(run_config)
        self.monitors: List[Any] = [MemoryMonitor, HangMonitor, CollectiveHub, CollectiveWatch, DataLoaderWatch]
        self.fault: Optional[dict] = None  # armed by rafter.testing.inject_fault
        self.user_callbacks: Optional[UserCallbacks] = None  # Ray's UserCallback hooks (set by TorchTrainer)
        self.phase = RunPhase.PREPARING
        self.attempt_errors: List[str] = []  # first line of each failed attempt's error
        self._start = 0.0
        self.preemption = Preemption(run_config.failure_config.preemption_grace_s)

    # ------------------------------------------------------------------------------------------
    def fit(self) -> Result:
        self.phase = RunPhase.PREPARING
        logging_config = self.run_config.logging_config
        setup_driver_logging(logging_config.log_level if logging_config else None)
        if logging_config is not None and not logging_config.echo_worker_output:
            self.echo = False
        check_storage(self.run_config.storage_path, self.run_config.storage_filesystem)  # one clear error, early
        payload = dumps_payload(self.train_fn, self.train_loop_config)  # fails here, naming what can't pickle
        if self.requested.elastic:
            self.scaling = self.requested.with_workers(elastic.size(self.requested, self._capacity))
        num_threads = self.backend.check_resources(self.scaling)
        state = RunState.open(self.run_config, fingerprint=self._fingerprint())
        try:
            return self._fit(state, payload, num_threads)
        finally:
            state.close()

    def _fit(self, state: RunState, payload: bytes, num_threads: int) -> Result:
        callbacks = rafter_callbacks(self.run_config.callbacks)
        self._start = time.time()
        error: Optional[TrainingFailedError] = None
        try:
            self.backend.start(self.scaling.use_gpu)
            with DriverSignals(self.preemption):  # SIGTERM and a first Ctrl-C: a preemption notice
                return_value = self._attempts(state, payload, num_threads, callbacks)
        except TrainingFailedError as exc:
            error = exc
            raise
        except KeyboardInterrupt:
            error = self._error(FailureKind.INTERRUPTED, "The run was interrupted (Ctrl-C); every worker was stopped.",
                                state)
            raise
        except Exception as exc:
            error = self._error(FailureKind.INTERNAL, f"rafter's driver failed: {type(exc).__name__}: {exc}", state)
            raise
        finally:
            self.phase = RunPhase.FAILED if error is not None else RunPhase.FINISHED
            try:
                self.backend.shutdown()
            finally:  # the one exit: the run folder says how it ended, and on_end fires
                # (a full disk must not hide the error: it gets a note, and on_end is skipped)
                result = keep_verdict(error, state.finish, error) if error is not None else state.finish(None)
                if result is not None:
                    notify(callbacks, "on_end", result=result, run_path=state.run_path)
        return state.result(return_value=return_value)

    def _attempts(self, state: RunState, payload: bytes, num_threads: int, callbacks) -> Any:
        """Run attempts until one succeeds (its rank 0's return value) or the run must end (raises)."""
        failures = preemptions = 0
        max_failures = self.run_config.failure_config.max_failures
        max_preemptions = self.run_config.failure_config.max_preemption_failures
        resize: Optional[str] = None  # why the next attempt is sized anew (elastic runs)
        while True:
            self.phase = RunPhase.STARTING
            if resize is not None:
                before, self.scaling = self.scaling.num_workers, self.requested.with_workers(
                    elastic.size(self.requested, self._capacity))
                num_threads = self.backend.check_resources(self.scaling)
                logger.warning("Resizing from %d to %d workers (%s), from %s.", before, self.scaling.num_workers,
                               resize, state.latest_checkpoint_path or "the beginning (no checkpoint yet)")
                resize = None
            number = state.begin_attempt(self.scaling.num_workers)
            notify(callbacks, "on_attempt_start", attempt=number, num_workers=self.scaling.num_workers,
                   run_path=state.run_path)
            try:
                group = self.backend.start_group(self.scaling, self._template(state, number, num_threads), payload,
                                                 echo=self.echo)
            except Exception as exc:
                state.end_attempt(f"could not start: {_first_line(str(exc))}")
                raise self._error(FailureKind.PLACEMENT, f"Attempt {number} could not start: {exc}", state) from exc
            self.phase = RunPhase.RUNNING
            try:
                attempt = self._run_attempt(group, number, state, callbacks)
            except CheckpointConflictError as exc:  # ranks' files can't be merged: retrying would do the same
                state.end_attempt(exc.first_line)
                raise
            self.phase = RunPhase.DECIDING
            if attempt.succeeded():
                notify_committed(callbacks, state, state.end_attempt(None))
                return attempt.return_value
            grown = next((m.grow_to for m in attempt.monitors if isinstance(m, elastic.ResizeMonitor)), None)
            if grown is not None:
                resize = f"the cluster has room for {grown}"
                state.end_attempt(f"Resized from {self.scaling.num_workers} to {grown} workers: {resize}.")
                continue
            preempted = self._preemption_error(attempt, state, preemptions + 1, max_preemptions)
            if preempted is not None:
                state.end_attempt(preempted.first_line)
                if self.preemption.driver_reason is not None or \
                        (max_preemptions != -1 and preemptions + 1 > max_preemptions):
                    raise preempted
                preemptions += 1
                logger.warning("Attempt %d: %s Restarting all %d workers from %s (preemption %d of %s allowed).",
                               number, preempted.first_line, self.scaling.num_workers,
                               state.latest_checkpoint_path or "the beginning (no checkpoint yet)", preemptions,
                               "unlimited" if max_preemptions == -1 else max_preemptions)
                continue
            failures += 1
            verdict = build_verdict(
                [attempt.outcomes[r] for r in sorted(attempt.outcomes)],
                run_start=self._start,
                log_dir=state.log_dir,
                attempt=number,
                attempt_errors=self.attempt_errors,
            )
            keep_verdict(verdict, state.end_attempt, verdict.first_line)  # a full disk must not hide it
            notify(callbacks, "on_failure", error=verdict, run_path=state.run_path)
            if self.user_callbacks is not None:
                self.user_callbacks.after_exception(worker_exceptions(attempt.outcomes, verdict))
            if self.requested.elastic and verdict.kind == FailureKind.LOST_NODE and self._fits_min():
                failures -= 1  # elastic: a lost node shrinks the group, within (min, max)
                resize = f"a node was lost: {verdict.first_line}"
                self.attempt_errors.append(verdict.first_line)
                continue
            if not should_retry(verdict, failures_so_far=failures, max_failures=max_failures):
                raise verdict
            self.attempt_errors.append(verdict.first_line)
            logger.warning(
                "Attempt %d failed: %s Restarting all %d workers from %s (failure %d of %s allowed).",
                number, verdict.first_line, self.scaling.num_workers,
                state.latest_checkpoint_path or "the beginning (no checkpoint yet)", failures,
                "unlimited" if max_failures == -1 else max_failures,
            )

    def _capacity(self) -> int:
        return self.backend.capacity(self.requested)

    def _fits_min(self) -> bool:
        try:
            return self._capacity() >= self.requested.min_workers
        except Exception:  # noqa: BLE001 - the cluster could not be asked: treat it as a failure
            return False

    def _preemption_error(self, attempt: "_Attempt", state: RunState, number: int,
                          allowed: int) -> Optional[PreemptionError]:
        """The attempt ended for a preemption (rafter stopped it for one, or a rank that had a notice died),
        described; None when it failed for another reason."""
        p = self.preemption
        if p.noticed_at is None:
            return None
        failed = attempt.failed_ranks()
        stopped = [r for r in failed if (attempt.outcomes[r].kill_reason or "").startswith(PREEMPTED_REASON)]
        if not stopped and not set(failed) & p.worker_ranks:
            return None
        monitor = next(m for m in attempt.monitors if isinstance(m, PreemptionMonitor))
        info = p.info(monitor.nodes())
        saved = monitor.saved
        when = time.strftime("%H:%M:%S", time.localtime(p.noticed_at))
        how = (f"the workers were stopped after their just-in-time checkpoint, "
               f"{time.time() - p.noticed_at:.1f} s after the notice" if saved else
               f"the workers reported no checkpoint in the {p.window_s:.0f} s window and were stopped at its end")
        checkpoint = state.latest_checkpoint_path
        lines = [f"Preempted: {info.reason} at {when}; {how}.",
                 f"Latest checkpoint: {checkpoint or 'none yet (the run will start from the beginning)'}."]
        if p.driver_reason is not None:
            lines.append("Run the same script again (same RunConfig(name, storage_path)) to resume from it.")
        elif allowed != -1 and number > allowed:
            lines.append(f"FailureConfig(max_preemption_failures={allowed}) allows no more restarts after a "
                         f"preemption; raise it (-1: unlimited) to restart from the latest checkpoint.")
        if not saved:
            lines.append("To save work on a preemption, call rafter.train.get_preemption_info() in the training "
                         "loop and report a checkpoint when it is not None (FailureConfig(preemption_grace_s=...) "
                         "sets the window).")
        lines += ["", f"Full logs: {state.log_dir}/rank_<N>.log"]
        return PreemptionError("\n".join(lines), preemption_info=info, drain_timed_out=not saved,
                               attempt_errors=list(self.attempt_errors), log_dir=state.log_dir)

    def _error(self, kind: FailureKind, what: str, state: RunState) -> ControllerError:
        lines = [what]
        if self.attempt_errors:
            lines += ["", f"Earlier attempts ({len(self.attempt_errors)}) failed:"]
            lines += [f"  attempt {i + 1}: {first}" for i, first in enumerate(self.attempt_errors)]
        lines += ["", f"Full logs: {state.log_dir}/rank_<N>.log"]
        return ControllerError("\n".join(lines), kind=kind, attempt_errors=list(self.attempt_errors),
                               log_dir=state.log_dir)

    def _fingerprint(self) -> dict:
        fn = self.train_fn
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        workers = self.requested.num_workers
        return {"train_fn": name, "num_workers": list(workers) if self.requested.elastic else workers,
                "backend": self.backend_name}

    # ------------------------------------------------------------------------------------------
    def _template(self, state: RunState, number: int, num_threads: int) -> WorkerSpec:
        """What every rank of attempt ``number`` shares; the backend fills in each rank's place (and its own
        environment variables, which win over these)."""
        # Libraries that size thread pools from OMP_NUM_THREADS get the worker's CPU share, not the machine.
        env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, num_threads))}
        if self.backend_name == "nccl":
            env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
        return WorkerSpec(
            world_size=self.scaling.num_workers,
            attempt=number,
            run_name=self.run_config.name,
            run_path=state.run_path,
            log_dir=state.log_dir,
            backend=self.backend_name,
            timeout_s=self.timeout_s,
            use_gpu=self.scaling.use_gpu,
            num_threads=num_threads,
            cwd=os.getcwd(),
            sys_path=list(sys.path),
            run_start_time=self._start,
            latest_checkpoint=state.latest_checkpoint_path,
            env=env,
            crash_at=self.fault,
            memory_limit=self.scaling.memory_per_worker,
            storage_filesystem=self.run_config.storage_filesystem,
        )

    def _run_attempt(self, group: WorkerGroup, number: int, state: RunState, callbacks) -> _Attempt:
        attempt = _Attempt(number, group)
        view = AttemptView(number, group, attempt.outcomes, self.run_config, self.scaling, self.timeout_s,
                           run_state=state, _first_failure=lambda: attempt.first_failure,
                           _failed_ranks=attempt.failed_ranks)
        try:
            preemption = PreemptionMonitor(view, self.preemption)
            view.answers["get_preemption_info"] = preemption.info_bytes
            attempt.monitors = [preemption] + [m(view) for m in self.monitors]
            if self.requested.elastic:
                attempt.monitors.append(elastic.ResizeMonitor(view, self.requested, self._capacity))
            attempt.dues = [m.due for m in attempt.monitors if callable(getattr(m, "due", None))]
            while not group.all_exited():
                for event in group.poll(self._sleep(attempt)):
                    self._handle(event, attempt, state, callbacks)
                now = time.time()
                for monitor in attempt.monitors:
                    self._apply(monitor.tick(now), attempt)
                failed = attempt.failed_ranks()
                if failed and attempt.first_failure is None:
                    attempt.first_failure = now
                if attempt.first_failure is not None and not attempt.stopping and \
                        now - attempt.first_failure >= FAILURE_GRACE_S:
                    attempt.stopping = True
                    first = min(failed, key=lambda r: (attempt.outcomes[r].exit_time or now, r))
                    self._apply(Stop(reason=f"stopped by rafter after rank {first} failed"), attempt)
        except BaseException:
            # Ctrl-C or an internal error: stop every worker before leaving.
            group.kill(reason="interrupted")
            deadline = time.time() + INTERRUPT_GRACE_S
            try:
                while not group.all_exited() and time.time() < deadline:
                    group.poll(POLL_S)
            except BaseException:  # noqa: BLE001
                pass
            raise
        finally:
            for monitor in attempt.monitors:
                self._apply(monitor.close(), attempt)
            for rank in group.ranks:
                attempt.outcomes[rank].log_tail = group.log_tail(rank)
            group.close()
        return attempt

    @staticmethod
    def _sleep(attempt: _Attempt) -> float:
        """How long the loop may wait for events: POLL_S, or less to the nearest deadline (a monitor's
        ``due()``, the end of the failure grace)."""
        dues = [due() for due in attempt.dues]
        if attempt.first_failure is not None and not attempt.stopping:
            dues.append(attempt.first_failure + FAILURE_GRACE_S)
        dues = [d for d in dues if d is not None]
        if not dues:
            return POLL_S
        return max(0.0, min(POLL_S, min(dues) + 0.001 - time.time()))  # just past it: the tick sees it due

    @staticmethod
    def _apply(decision: Optional[Note], attempt: _Attempt) -> None:
        """The one place where what a monitor (or the failure grace) decided happens."""
        if decision is None:
            return
        for rank, evidence in decision.evidence.items():
            attempt.outcomes[rank].evidence.update(evidence)
        if isinstance(decision, Stop):
            attempt.group.kill(decision.ranks, reason=decision.reason)

    @staticmethod
    def _serve_storage(event: ev.StorageRequest, attempt: _Attempt, state: RunState) -> None:
        try:
            if event.op == "upload":
                reply = msg.StorageDone(state.storage.upload_dir(event.source, event.dest))
            else:
                Storage(event.source).download_dir(event.source, event.dest)
                reply = msg.StorageDone(0)
        except Exception as exc:  # noqa: BLE001 - the worker raises it
            reply = msg.StorageDone(0, f"{type(exc).__name__}: {exc}")
        try:
            attempt.group.send(event.rank, reply)
        except OSError:
            pass

    def _handle(self, event, attempt: _Attempt, state: RunState, callbacks) -> None:
        outcome = attempt.outcomes[event.rank]
        if isinstance(event, ev.Reported):
            outcome.reports += 1
            if self.user_callbacks is not None:
                committed = self.user_callbacks.on_report(event, state)  # commits through state, then Ray's hooks
            else:
                committed = state.on_report(event)
            notify_report(callbacks, state, event, committed)
        elif isinstance(event, ev.Hello):
            outcome.pid, outcome.host = event.pid, event.host
        elif isinstance(event, ev.Finished):
            outcome.finished = True
            if event.rank == 0:
                attempt.return_value = cloudpickle.loads(event.value)
        elif isinstance(event, ev.Errored):
            outcome.error = event.record
        elif isinstance(event, ev.Exited):
            outcome.exit_code, outcome.signal, outcome.exit_time = event.exit_code, event.signal, event.time
            outcome.killed_by_rafter, outcome.kill_reason = event.killed_by_rafter, event.reason
            outcome.evidence.update(event.evidence)  # e.g. the Ray backend's lost_node
        elif isinstance(event, ev.StorageRequest):
            self._serve_storage(event, attempt, state)
        attempt.note(event.rank)
        for monitor in attempt.monitors:
            self._apply(monitor.on_event(event), attempt)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
