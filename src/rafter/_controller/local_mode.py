"""``ScalingConfig(num_workers=0)``: Ray Train's local mode. The train function runs in this process.

The ``rafter.train`` API works as in a worker (``report``, ``get_context``, ``get_checkpoint``, the
collectives), so ``breakpoint()``/pdb work in the train function. Reports and checkpoints land in the
usual run folder, so ``Result.path``, ``Result.checkpoint`` and resuming by re-running work too.

Under ``torchrun`` (its ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``... variables are set) each torchrun process
is one rank: it joins the process group torchrun set up, and the ranks share one run folder that only
rank 0 writes. Reports and collectives then travel over that process group (there is no driver).
``num_workers > 0`` under torchrun is refused: every torchrun process would start its own workers.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any, Dict, List, Optional

from rafter._backends import events as ev
from rafter._controller.callbacks import notify, notify_committed, notify_report
from rafter._controller.run_state import RunState
from rafter._controller.user_callbacks import rafter_callbacks
from rafter._controller.storage_check import check_storage
from rafter._util.log import setup_driver_logging
from rafter._worker import messages as msg
from rafter._worker.session import WorkerSession, get_session, set_session
from rafter._worker.spec import WorkerSpec
from rafter.train._result import Result

logger = logging.getLogger("rafter")

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env() -> Optional[Dict[str, str]]:
    """The torch.distributed launch variables when this process was started by torchrun (as Ray checks)."""
    if all(name in os.environ for name in TORCHRUN_VARS):
        return {name: os.environ[name] for name in TORCHRUN_VARS}
    return None


def refuse_workers_under_torchrun(num_workers: int, script_hint: str = "your_script.py") -> None:
    env = torchrun_env()
    if env is None or num_workers == 0:
        return
    raise ValueError(
        f"TorchTrainer(scaling_config=ScalingConfig(num_workers={num_workers})) was started under torchrun "
        f"(RANK={env['RANK']}, WORLD_SIZE={env['WORLD_SIZE']}): each of the {env['WORLD_SIZE']} torchrun "
        f"processes would start its own {num_workers} workers and all of them would write one run folder. "
        f"Either launch without torchrun and let rafter start the workers: `python {script_hint}` with "
        f"ScalingConfig(num_workers={num_workers}); or keep torchrun and set ScalingConfig(num_workers=0), so "
        f"that each torchrun process runs the train function as one rank of torchrun's process group."
    )


def _fingerprint(trainer) -> dict:
    fn = trainer.train_loop_per_worker
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return {"train_fn": name, "num_workers": 0, "backend": "local mode"}


class _Peers:
    """The other torchrun ranks, over the process group torchrun set up (None when running alone)."""

    def __init__(self, dist) -> None:
        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def broadcast(self, value: Any) -> Any:
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> Optional[List[Any]]:
        out = [None] * self.world_size if self.rank == 0 else None
        self.dist.gather_object(value, out, dst=0)
        return out


class _InProcessChannel:
    """Stands in for the worker-to-driver socket: each message is handled right here, in order."""

    in_process = True

    def __init__(self, driver: "_LocalDriver") -> None:
        self._driver = driver
        self._replies: collections.deque = collections.deque()

    def send(self, message) -> None:
        reply = self._driver.handle(message)
        if reply is not None:
            self._replies.append(reply)

    send_metrics = send

    def recv(self):
        return self._replies.popleft()

    def close(self) -> None:
        pass


class _LocalDriver:
    """What the controller does for a worker, done in-process: commit reports, answer collectives."""

    def __init__(self, state: Optional[RunState], peers: Optional[_Peers], user_callbacks, trainer) -> None:
        self.trainer = trainer
        self.state = state
        self.peers = peers
        self.user_callbacks = user_callbacks
        self.callbacks = rafter_callbacks(state.config.callbacks) if state is not None else []
        self.last_metrics: Optional[Dict[str, Any]] = None
        self.history: List[Dict[str, Any]] = []

    def handle(self, message):
        if isinstance(message, msg.Reported):
            self.last_metrics = message.metrics
            self.history.append(message.metrics)
            messages = self.peers.gather(message) if self.peers else [message]
            if self.state is not None:
                for rank, m in enumerate(messages):
                    event = ev.from_message(rank, m)
                    committed = self.user_callbacks.on_report(event, self.state)
                    notify_report(self.callbacks, self.state, event, committed)
            if self.peers:
                self.peers.broadcast(None)  # every rank returns once rank 0 committed (as Ray's report, a barrier)
            return None
        if isinstance(message, msg.CollectiveRequest):
            seq, op, data = message.seq, message.op, message.data
            if self.peers is None:
                return msg.CollectiveDone(seq, data)
            ops_and_data = self.peers.broadcast((op, data))
            if ops_and_data[0] != op:
                return msg.CollectiveDone(seq, None, (
                    f"rafter.train.collective: rank {self.peers.rank} called {op}() as its call #{seq} while rank "
                    f"0 called {ops_and_data[0]}(). Every rank must make the same collective calls in order."))
            return msg.CollectiveDone(seq, ops_and_data[1])
        if isinstance(message, msg.StorageRequest):
            return self._storage(message.op, message.source, message.dest)
        if isinstance(message, msg.DatasetRequest):
            return self._datasets()
        if isinstance(message, msg.CheckpointsRequest):
            return msg.CheckpointsDone(self._committed())
        return None

    def _committed(self):
        from rafter._controller.reported_checkpoints import committed

        if self.state is not None:
            return committed(self.state)
        from rafter import _run_folder  # a torchrun rank > 0: what rank 0 has journaled in the shared folder
        from rafter._storage import Storage

        spec = self.spec
        record = _run_folder.read(spec.run_path, spec.storage_filesystem)
        storage = Storage(record.path, spec.storage_filesystem)
        return [(storage.join_path(record.path, c["name"]), c["metrics"]) for c in record.checkpoints]

    def _datasets(self):
        from rafter._controller.datasets import materialize, split
        from rafter._util.pickling import dumps

        if not self.trainer.datasets:
            return msg.DatasetsDone(None, dumps({}))
        if self.peers is not None:
            return msg.DatasetsDone(None, None, (
                "TorchTrainer(datasets=...) is not supported under torchrun (as in Ray's local mode): there is "
                "no Ray cluster to shard the data across the torchrun processes. Launch without torchrun and "
                "ScalingConfig(num_workers=N), or read the data with a torch DataLoader."))
        datasets = materialize(self.trainer.datasets)
        return msg.DatasetsDone(None, split(datasets, self.trainer.dataset_config, 1)[0])  # in-process: as is

    def _storage(self, op: str, source: str, dest: str):
        from rafter._storage import Storage

        try:
            if op == "upload":
                return msg.StorageDone(Storage(dest).upload_dir(source, dest))
            Storage(source).download_dir(source, dest)
            return msg.StorageDone(0)
        except Exception as exc:  # noqa: BLE001 - the caller raises it
            return msg.StorageDone(0, f"{type(exc).__name__}: {exc}")


def _join_torchrun_group(trainer):
    import torch
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        backend = trainer.torch_config.resolve_backend(trainer.scaling_config.use_gpu)
        import datetime

        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=trainer.torch_config.timeout_s))
        created = True
    if torch.cuda.is_available() and trainer.scaling_config.use_gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return _Peers(dist), created


def run(trainer) -> Result:
    """``TorchTrainer.fit()`` with ``num_workers=0``."""
    setup_driver_logging()
    if get_session() is not None:
        raise RuntimeError(
            "TorchTrainer.fit() with ScalingConfig(num_workers=0) was called inside a train function that is "
            "already running; call fit() from the driver script."
        )
    check_storage(trainer.run_config.storage_path, trainer.run_config.storage_filesystem)
    env = torchrun_env()
    peers, created_group = _join_torchrun_group(trainer) if env else (None, False)
    rank, world_size = (peers.rank, peers.world_size) if peers else (0, 1)
    if peers is not None and peers.world_size == 1:
        peers = None
    run_config = trainer.run_config
    logger.info("Running in local mode: the train function runs in this process%s.",
                f" as rank {rank} of {world_size} (torchrun)" if env else "")
    state = RunState.open(run_config, fingerprint=_fingerprint(trainer)) if rank == 0 else None
    try:
        return _run(trainer, state, env, peers, created_group, rank, world_size)
    finally:
        if state is not None:
            state.close()


def _run(trainer, state, env, peers, created_group, rank, world_size) -> Result:
    from rafter._controller.user_callbacks import UserCallbacks
    from rafter._worker.bootstrap import _call_user_function

    run_config = trainer.run_config
    number = state.begin_attempt(world_size) if state else 0
    if state is not None:
        notify(rafter_callbacks(run_config.callbacks), "on_attempt_start", attempt=number, num_workers=world_size,
               run_path=state.run_path)
    shared = (state.run_path, state.log_dir, state.latest_checkpoint_path, number) if state else None
    if peers is not None:
        shared = peers.broadcast(shared)
    run_path, log_dir, latest, number = shared
    local_world = int(env["LOCAL_WORLD_SIZE"]) if env else 1
    spec = WorkerSpec(
        rank=rank, world_size=world_size, local_rank=int(env["LOCAL_RANK"]) if env else 0,
        local_world_size=local_world, node_rank=rank // local_world, attempt=number,
        run_name=run_config.name, run_path=run_path, log_dir=log_dir,
        backend=trainer.torch_config.resolve_backend(trainer.scaling_config.use_gpu),
        timeout_s=trainer.torch_config.timeout_s, use_gpu=trainer.scaling_config.use_gpu,
        num_threads=0, rdzv_host="", cwd=os.getcwd(), sys_path=[], run_start_time=time.time(),
        latest_checkpoint=latest, storage_filesystem=run_config.storage_filesystem,
    )
    user_callbacks = UserCallbacks.for_run(trainer)
    driver = _LocalDriver(state, peers, user_callbacks, trainer)
    driver.spec = spec
    session = WorkerSession(spec, _InProcessChannel(driver))
    set_session(session)
    try:
        try:
            value = _call_user_function(trainer.train_loop_per_worker, trainer.train_loop_config)
            session.drain_uploads()  # ASYNC uploads still running
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
            value = None
    except BaseException as exc:
        if state is not None:
            _record_failure(state, spec, exc, user_callbacks)
        raise  # as in Ray's local mode: the train function's own exception, for the debugger
    finally:
        set_session(None)
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if state is None:  # torchrun rank > 0: its own metrics and return value, rank 0's run folder
        return Result(metrics=driver.last_metrics, path=run_path, metrics_history=driver.history,
                      return_value=value)
    callbacks = rafter_callbacks(run_config.callbacks)
    notify_committed(callbacks, state, state.end_attempt(None))
    notify(callbacks, "on_end", result=state.finish(None), run_path=state.run_path)
    return state.result(return_value=value)


def _record_failure(state: RunState, spec: WorkerSpec, exc: BaseException, user_callbacks) -> None:
    from rafter._diagnose.verdict import RankOutcome, build_verdict
    from rafter._worker.records import exception_record

    outcome = RankOutcome(rank=spec.rank, pid=os.getpid(), host=os.uname().nodename,
                          error=exception_record(exc, "train function"), exit_time=time.time())
    verdict = build_verdict([outcome], run_start=spec.run_start_time, log_dir=state.log_dir,
                            attempt=spec.attempt)
    callbacks = rafter_callbacks(state.config.callbacks)
    state.end_attempt(verdict.first_line)
    notify(callbacks, "on_failure", error=verdict, run_path=state.run_path)
    user_callbacks.after_exception({spec.rank: exc})
    notify(callbacks, "on_end", result=state.finish(verdict), run_path=state.run_path)
