"""The driver's run loop: start a worker group, pump its events, decide, repeat, build the Result.

    user -> TorchTrainer.fit() -> Controller.fit() -> backend.start_group() -> workers
    workers -> events (Hello, Reported, Finished, Errored, Exited) -> Controller -> Result | verdict

The controller never touches torch; the backend never decides policy.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

import cloudpickle

from rafter._backends import events as ev
from rafter._controller.collectives import CollectiveHub
from rafter._controller.callbacks import notify, notify_committed, notify_report
from rafter._controller.checkpoints import CheckpointConflictError
from rafter._controller.failure_policy import should_retry
from rafter._controller.run_state import RunState
from rafter._controller.storage_check import check_storage
from rafter._controller.user_callbacks import UserCallbacks, rafter_callbacks, worker_exceptions
from rafter._diagnose.collectives import CollectiveWatch
from rafter._diagnose.dataloader import DataLoaderWatch
from rafter._diagnose.hang import HangMonitor
from rafter._diagnose.memory import MemoryMonitor
from rafter._diagnose.verdict import RankOutcome, build_verdict, keep_verdict
from rafter._storage import Storage
from rafter._util.log import setup_driver_logging
from rafter._util.pickling import dumps_payload
from rafter._worker.spec import WorkerSpec
from rafter.train._config import RunConfig, ScalingConfig
from rafter.train._result import Result

logger = logging.getLogger("rafter")

FAILURE_GRACE_S = 0.5  # after the first failure, how long other ranks get to fail on their own
POLL_S = 0.1
INTERRUPT_GRACE_S = 1.0


def choose_backend(run_config: RunConfig):
    cluster = run_config.cluster
    if cluster == "auto":
        import sys

        ray = sys.modules.get("ray")
        use_ray = bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())
        cluster = "ray" if use_ray else "local"
    if cluster == "ray":
        from rafter._backends.ray import RayBackend

        return RayBackend(run_config.cluster_address)
    from rafter._backends.local import LocalBackend

    return LocalBackend()


class _Attempt:
    def __init__(self, number: int, ranks: List[int]) -> None:
        self.number = number
        self.outcomes: Dict[int, RankOutcome] = {r: RankOutcome(rank=r) for r in ranks}
        self.first_failure: Optional[float] = None
        self.return_value: Any = None
        self.monitors: List[Any] = []

    def failed_ranks(self) -> List[int]:
        return [r for r, o in self.outcomes.items() if o.failed]

    def succeeded(self) -> bool:
        return all(o.finished for o in self.outcomes.values())


class Controller:
    def __init__(
        self,
        train_fn: Callable,
        train_loop_config: Optional[dict],
        scaling: ScalingConfig,
        run_config: RunConfig,
        backend_name: str,
        timeout_s: float,
        echo: bool = True,
    ) -> None:
        self.train_fn = train_fn
        self.train_loop_config = train_loop_config
        self.scaling = scaling
        self.run_config = run_config
        self.backend_name = backend_name
        self.timeout_s = timeout_s
        self.echo = echo
        # per-attempt watchers (see rafter._diagnose)
        self.monitors: List[Any] = [MemoryMonitor, HangMonitor, CollectiveHub, CollectiveWatch, DataLoaderWatch]
        self.fault: Optional[dict] = None  # armed by rafter.testing.inject_fault
        self.user_callbacks: Optional[UserCallbacks] = None  # Ray's UserCallback hooks (set by TorchTrainer)

    # ------------------------------------------------------------------------------------------
    def fit(self) -> Result:
        logging_config = self.run_config.logging_config
        setup_driver_logging(logging_config.log_level if logging_config else None)
        if logging_config is not None and not logging_config.echo_worker_output:
            self.echo = False
        check_storage(self.run_config.storage_path, self.run_config.storage_filesystem)  # before anything is written: one clear error
        payload = dumps_payload(self.train_fn, self.train_loop_config)  # fails here, naming what can't pickle
        backend = choose_backend(self.run_config)
        num_threads = backend.check_resources(self.scaling)
        state = RunState.open(self.run_config, fingerprint=self._fingerprint())
        try:
            return self._fit(backend, state, payload, num_threads)
        finally:
            state.close()

    def _fit(self, backend, state: RunState, payload: bytes, num_threads: int) -> Result:
        callbacks = rafter_callbacks(self.run_config.callbacks)
        start = time.time()
        attempt_errors: List[str] = []
        backend.start(self.scaling.use_gpu)
        try:
            failures = 0
            while True:
                attempt = self._run_attempt(backend, state, payload, num_threads, start)
                number = attempt.number
                if attempt.succeeded():
                    notify_committed(callbacks, state, state.end_attempt(None))
                    break
                failures += 1
                verdict = build_verdict(
                    [attempt.outcomes[r] for r in sorted(attempt.outcomes)],
                    run_start=start,
                    log_dir=state.log_dir,
                    attempt=number,
                    attempt_errors=attempt_errors,
                )
                keep_verdict(verdict, state.end_attempt, verdict.first_line)  # a full disk must not hide it
                notify(callbacks, "on_failure", error=verdict, run_path=state.run_path)
                if self.user_callbacks is not None:
                    self.user_callbacks.after_exception(worker_exceptions(attempt.outcomes, verdict))
                if not should_retry(verdict, failures_so_far=failures, max_failures=self.run_config.failure_config.max_failures):
                    result = keep_verdict(verdict, state.finish, verdict)
                    if result is not None:
                        notify(callbacks, "on_end", result=result, run_path=state.run_path)
                    raise verdict
                attempt_errors.append(verdict.first_line)
                logger.warning(
                    "Attempt %d failed: %s Restarting all %d workers from %s (failure %d of %s allowed).",
                    number, verdict.first_line, self.scaling.num_workers,
                    state.latest_checkpoint_path or "the beginning (no checkpoint yet)", failures,
                    "unlimited" if self.run_config.failure_config.max_failures == -1
                    else self.run_config.failure_config.max_failures,
                )
        except CheckpointConflictError as exc:  # ranks' files can't be merged: retrying would do the same
            state.end_attempt(exc.first_line)
            notify(callbacks, "on_end", result=state.finish(exc), run_path=state.run_path)
            raise
        finally:
            backend.shutdown()
        notify(callbacks, "on_end", result=state.finish(None), run_path=state.run_path)
        return state.result(return_value=attempt.return_value)

    def _fingerprint(self) -> dict:
        fn = self.train_fn
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        return {"train_fn": name, "num_workers": self.scaling.num_workers, "backend": self.backend_name}

    # ------------------------------------------------------------------------------------------
    def _specs(self, backend, state: RunState, number: int, num_threads: int, start: float) -> List[WorkerSpec]:
        import sys

        env = backend.worker_env()
        # Libraries that size thread pools from OMP_NUM_THREADS get the worker's CPU share, not the machine.
        env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS") or str(max(1, num_threads)))
        if self.backend_name == "nccl":
            env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        specs = []
        for place in backend.placement(self.scaling):
            specs.append(
                WorkerSpec(
                    rank=place["rank"],
                    world_size=self.scaling.num_workers,
                    local_rank=place["local_rank"],
                    local_world_size=place["local_world_size"],
                    node_rank=place["node_rank"],
                    attempt=number,
                    run_name=self.run_config.name,
                    run_path=state.run_path,
                    log_dir=state.log_dir,
                    backend=self.backend_name,
                    timeout_s=self.timeout_s,
                    use_gpu=self.scaling.use_gpu,
                    num_threads=num_threads,
                    rdzv_host=place["rdzv_host"],
                    cwd=os.getcwd(),
                    sys_path=list(sys.path),
                    run_start_time=start,
                    latest_checkpoint=state.latest_checkpoint_path,
                    env=dict(env),
                    device_index=place.get("device_index"),
                    crash_at=self.fault,
                    memory_limit=self.scaling.memory_per_worker,
                    storage_filesystem=self.run_config.storage_filesystem,
                )
            )
        return specs

    def _run_attempt(self, backend, state: RunState, payload: bytes, num_threads: int, start: float) -> _Attempt:
        number = state.begin_attempt(self.scaling.num_workers)
        notify(rafter_callbacks(self.run_config.callbacks), "on_attempt_start", attempt=number, num_workers=self.scaling.num_workers,
               run_path=state.run_path)
        specs = self._specs(backend, state, number, num_threads, start)
        group = backend.start_group(specs, payload, echo=self.echo)
        attempt = _Attempt(number, group.ranks)
        attempt.group = group
        attempt.state = state  # what monitors answering workers read (committed checkpoints)
        monitors = attempt.monitors = [m(group, attempt, self) for m in self.monitors]
        try:
            while not group.all_exited():
                for event in group.poll(POLL_S):
                    self._handle(event, attempt, state)
                now = time.time()
                for monitor in monitors:
                    monitor.tick(now)
                failed = attempt.failed_ranks()
                if failed and attempt.first_failure is None:
                    attempt.first_failure = now
                if attempt.first_failure is not None and now - attempt.first_failure >= FAILURE_GRACE_S:
                    first = min(failed, key=lambda r: (attempt.outcomes[r].exit_time or now, r))
                    group.kill(reason=f"stopped by rafter after rank {first} failed")
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
            for monitor in monitors:
                monitor.close()
            for rank in group.ranks:
                attempt.outcomes[rank].log_tail = group.log_tail(rank)
            group.close()
        return attempt

    @staticmethod
    def _serve_storage(event, attempt: _Attempt, state: RunState) -> None:
        try:
            if event.op == "upload":
                reply = ("storage_done", state.storage.upload_dir(event.source, event.dest), None)
            else:
                Storage(event.source).download_dir(event.source, event.dest)
                reply = ("storage_done", 0, None)
        except Exception as exc:  # noqa: BLE001 - the worker raises it
            reply = ("storage_done", 0, f"{type(exc).__name__}: {exc}")
        try:
            attempt.group.send(event.rank, reply)
        except OSError:
            pass

    def _handle(self, event, attempt: _Attempt, state: RunState) -> None:
        o = attempt.outcomes[event.rank]
        if isinstance(event, ev.Reported):
            o.reports += 1
            callbacks = rafter_callbacks(self.run_config.callbacks)
            if self.user_callbacks is not None:
                committed = self.user_callbacks.on_report(event, state)  # commits through state, then Ray's hooks
            else:
                committed = state.on_report(event)
            notify_report(callbacks, state, event, committed)
        elif isinstance(event, ev.Hello):
            o.pid, o.host = event.pid, event.host
        elif isinstance(event, ev.Finished):
            o.finished = True
            if event.rank == 0:
                attempt.return_value = cloudpickle.loads(event.value)
        elif isinstance(event, ev.Errored):
            o.error = event.record
        elif isinstance(event, ev.Exited):
            o.exit_code, o.signal, o.exit_time = event.exit_code, event.signal, event.time
            o.killed_by_rafter, o.kill_reason = event.killed_by_rafter, event.reason
            o.evidence.update(getattr(event, "evidence", None) or {})  # e.g. the Ray backend's lost_node
        elif isinstance(event, ev.StorageRequest):
            self._serve_storage(event, attempt, state)
        for monitor in attempt.monitors:
            monitor.on_event(event)
