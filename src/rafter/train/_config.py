"""Configuration objects, named and defaulted as in Ray Train 2.60.

Each object validates what it can on construction (types, ranges); checks that depend on the
machine or cluster (enough GPUs?) happen when ``fit()`` starts, before any process is created.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from rafter.train._validation import (
    ConfigTypeError,
    ConfigValueError,
    check_bool,
    check_choice,
    check_folder_name,
    check_instance,
    check_optional_str,
    check_path,
    is_int,
    is_number,
    with_removed_arguments,
)

_KNOWN_RESOURCES = ("CPU", "GPU", "memory")
MIN_MEMORY_BYTES = 2**20  # a smaller memory amount is a unit mistake (GiB written as bytes)
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
CALLBACK_HOOKS = ("on_attempt_start", "after_report", "on_checkpoint", "on_failure", "on_end")


@with_removed_arguments("ScalingConfig", {
    "trainer_resources": "the V2 controller needs no resources of its own; remove it",
})
@dataclass
class ScalingConfig:
    """How many workers to run and what each one gets.

    Attributes:
        num_workers: number of training processes (ranks). 0 is Ray's local mode: the train function runs
            in the calling process (for debugging with pdb), or as one rank per process under torchrun.
            ``(min, max)`` is elastic: as many workers as fit (at least ``min``), restarted from the latest
            checkpoint with a new world size when capacity appears (up to ``max``) or a node is lost (down to
            ``min``). On the local backend, as many as this machine's CPUs (or GPUs) hold within the range.
        use_gpu: give each worker one GPU and use NCCL.
        resources_per_worker: e.g. ``{"CPU": 2, "GPU": 1, "memory": 8 * 2**30}``. ``CPU`` sets the
            worker's torch intra-op thread count (default 1); ``memory`` (bytes) is a limit rafter
            enforces. Other keys are custom Ray resources and need the Ray backend.
        placement_strategy: Ray placement-group strategy (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD).
        accelerator_type: Ray accelerator type, e.g. ``"A100"`` (Ray backend only).
        elastic_resize_monitor_interval_s: with an elastic ``num_workers``, how often (seconds) to look for
            room for more workers while the group is healthy.
    """

    num_workers: Union[int, Tuple[int, int]] = 1
    use_gpu: bool = False
    resources_per_worker: Optional[Dict[str, float]] = None
    placement_strategy: str = "PACK"
    accelerator_type: Optional[str] = None
    elastic_resize_monitor_interval_s: float = 60.0

    def __post_init__(self) -> None:
        name = "ScalingConfig"
        if isinstance(self.num_workers, (tuple, list)):
            low_high = tuple(self.num_workers)
            if len(low_high) != 2 or not all(is_int(v) for v in low_high) or not 1 <= low_high[0] <= low_high[1]:
                raise ConfigValueError(name, "num_workers", self.num_workers,
                                       "an elastic range is (min, max) with 1 <= min <= max", (2, 4))
            self.num_workers = low_high
        elif not is_int(self.num_workers) or self.num_workers < 0:
            raise ConfigValueError(name, "num_workers", self.num_workers,
                                   "num_workers must be a positive int (or 0: local mode, in this process), or an "
                                   "elastic range (min, max)", 4)
        if not is_number(self.elastic_resize_monitor_interval_s) or self.elastic_resize_monitor_interval_s <= 0:
            raise ConfigValueError(name, "elastic_resize_monitor_interval_s", self.elastic_resize_monitor_interval_s,
                                   "expected seconds > 0", 60.0)
        check_bool(name, "use_gpu", self.use_gpu)
        check_choice(name, "placement_strategy", self.placement_strategy, PLACEMENT_STRATEGIES)
        check_optional_str(name, "accelerator_type", self.accelerator_type, "A100")
        resources = self.resources_per_worker
        if resources is None:
            return
        if not isinstance(resources, dict):
            raise ConfigValueError(name, "resources_per_worker", resources, "expected a dict", {"CPU": 2})
        for key, value in resources.items():
            if not isinstance(key, str) or not key:
                raise ConfigValueError(name, "resources_per_worker", resources,
                                       f"resource name {key!r} must be a non-empty str", {"CPU": 2})
            if not is_number(value) or value < 0:
                raise ConfigValueError(
                    name, "resources_per_worker", resources,
                    f"the amount of {key!r} must be a number >= 0, got {value!r}",
                    {key: 2 if key != "memory" else 8 * 2**30})
            known = next((k for k in _KNOWN_RESOURCES if k.lower() == key.lower() and k != key), None)
            if known:  # on Ray, 'cpu' would be a custom resource no node has, and the run would wait forever
                raise ConfigValueError(name, "resources_per_worker", resources,
                                       f"resource names are case-sensitive: {key!r} is not {known!r}", {known: value})
        memory = resources.get("memory", 0)
        if 0 < memory < MIN_MEMORY_BYTES:
            raise ConfigValueError(
                name, "resources_per_worker", resources,
                f"memory is in bytes, and {memory!r} bytes is less than 1 MiB; write 8 GiB as 8 * 2**30",
                {"memory": 8 * 2**30})
        if resources.get("GPU", 0) and not self.use_gpu:
            raise ConfigValueError(
                name, "resources_per_worker", resources,
                "asks for GPUs while {off}: set {on} to give workers GPUs",
                refs={"off": ("use_gpu", False), "on": ("use_gpu", True)})

    # Derived views -------------------------------------------------------------------------
    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if self.elastic else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if self.elastic else self.num_workers

    def with_workers(self, n: int) -> "ScalingConfig":
        """This request with a fixed worker count (what one attempt of an elastic run uses)."""
        import dataclasses

        return dataclasses.replace(self, num_workers=n)

    @property
    def cpus_per_worker(self) -> float:
        resources = self.resources_per_worker or {}
        if "CPU" in resources:
            return float(resources["CPU"])
        return 0.0 if (self.use_gpu and not resources) else 1.0

    @property
    def gpus_per_worker(self) -> float:
        resources = self.resources_per_worker or {}
        if "GPU" in resources:
            return float(resources["GPU"])
        return 1.0 if self.use_gpu else 0.0

    @property
    def memory_per_worker(self) -> Optional[int]:
        value = (self.resources_per_worker or {}).get("memory")
        return int(value) if value else None

    @property
    def custom_resources(self) -> Dict[str, float]:
        return {k: v for k, v in (self.resources_per_worker or {}).items() if k not in _KNOWN_RESOURCES}

    @property
    def total_resources(self) -> Dict[str, float]:
        """What all workers together ask for (at the most, when elastic); like Ray's, it holds no zero amounts."""
        n = self.max_workers
        total = {"CPU": self.cpus_per_worker * n, "GPU": self.gpus_per_worker * n}
        for key, value in (self.resources_per_worker or {}).items():
            if key not in ("CPU", "GPU"):
                total[key] = value * n
        return {k: v for k, v in total.items() if v}


@with_removed_arguments("FailureConfig", {
    "fail_fast": "a failed worker always stops the others at once; FailureConfig(max_failures=N) sets how many "
                 "restarts are allowed, so remove fail_fast",
})
@dataclass
class FailureConfig:
    """How many worker-group failures and preemptions to recover from.

    Attributes:
        max_failures: restarts allowed after a worker fails (0: none; -1: unlimited). Each restart starts
            a fresh group of workers from the latest committed checkpoint.
        max_preemption_failures: restarts allowed after a preemption (a SIGTERM to a worker from outside
            rafter), counted apart from ``max_failures`` (-1, the default: unlimited; 0: none).
        relax_collectives_on_preemption: accepted for Ray Train compatibility; rafter's preempted workers
            stay alive through the window, so every rank takes part in its checkpoint (no effect).
        preemption_grace_s: how long the workers get, after a preemption notice (SIGTERM to the driver or
            to a worker, a first Ctrl-C), to report a just-in-time checkpoint before they are stopped; they
            are stopped sooner once every rank has reported one. 0 (the default) gives 30 s, the default
            grace period of Kubernetes.
    """

    max_failures: int = 0
    max_preemption_failures: int = -1
    relax_collectives_on_preemption: bool = False
    preemption_grace_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_failures", "max_preemption_failures"):
            value = getattr(self, name)
            if not is_int(value) or value < -1:
                raise ConfigValueError("FailureConfig", name, value, "expected an int >= 0, or -1 for unlimited", 3)
        check_bool("FailureConfig", "relax_collectives_on_preemption", self.relax_collectives_on_preemption)
        if not is_number(self.preemption_grace_s) or not 0 <= self.preemption_grace_s <= 86400:
            raise ConfigValueError("FailureConfig", "preemption_grace_s", self.preemption_grace_s,
                                   "expected seconds between 0 and 86400", 60)


_REPORT_IT = "report a checkpoint from the train function with rafter.train.report(metrics, checkpoint=...)"


@with_removed_arguments("CheckpointConfig", {
    "checkpoint_frequency": f"{_REPORT_IT} whenever you want one",
    "checkpoint_at_end": f"{_REPORT_IT} at the end of the train function",
})
@dataclass
class CheckpointConfig:
    """Which checkpoints to keep.

    Attributes:
        num_to_keep: keep at most this many (the latest is always kept); None keeps all.
        checkpoint_score_attribute: metric used to rank checkpoints; None ranks by recency.
        checkpoint_score_order: "max" or "min".
    """

    num_to_keep: Optional[int] = None
    checkpoint_score_attribute: Optional[str] = None
    checkpoint_score_order: str = "max"

    def __post_init__(self) -> None:
        name = "CheckpointConfig"
        if self.num_to_keep is not None and (not is_int(self.num_to_keep) or self.num_to_keep < 1):
            raise ConfigValueError(name, "num_to_keep", self.num_to_keep, "expected an int >= 1, or None to keep all", 2)
        check_optional_str(name, "checkpoint_score_attribute", self.checkpoint_score_attribute, "loss")
        if self.checkpoint_score_order not in ("max", "min"):
            raise ConfigValueError(name, "checkpoint_score_order", self.checkpoint_score_order,
                                   "expected 'max' or 'min'")


@dataclass
class LoggingConfig:
    """How much rafter says on the driver's console.

    Attributes:
        log_level: level of the ``rafter`` logger ("DEBUG", "INFO", "WARNING", ...). Without a
            LoggingConfig, a level you set yourself (``logging.getLogger("rafter").setLevel(...)``) stands.
        echo_worker_output: print each worker's stdout/stderr on the driver, prefixed ``[rank N]``
            (rafter's extension; the rank logs in the run folder are written either way).
    """

    log_level: str = "INFO"
    echo_worker_output: bool = True

    def __post_init__(self) -> None:
        names = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if not isinstance(self.log_level, str) or self.log_level.upper() not in names + ("WARN", "FATAL"):
            raise ConfigValueError("LoggingConfig", "log_level", self.log_level, f"expected one of {', '.join(names)}",
                                   "INFO")
        self.log_level = self.log_level.upper()
        check_bool("LoggingConfig", "echo_worker_output", self.echo_worker_output)


def _default_run_name() -> str:
    return "rafter_run-" + datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-") + os.urandom(3).hex()


def default_storage_path() -> str:
    return os.path.join(os.path.expanduser("~"), "rafter_results")


def check_callbacks(config: str, callbacks: Any) -> List[Any]:
    """A list of callback objects: each one an instance with at least one of ``Callback``'s hooks."""
    example = "[TensorBoardCallback()]"
    if isinstance(callbacks, (str, bytes)):
        raise ConfigValueError(
            config, "callbacks", callbacks,
            f"expected a list of callback objects, not a string; pass objects, e.g. callbacks={example} "
            f"(from rafter.train.callbacks); names like 'tensorboard' are for job files")
    if not isinstance(callbacks, (list, tuple)):
        raise ConfigValueError(
            config, "callbacks", callbacks,
            f"expected a list of callback objects, got {type(callbacks).__name__}; wrap a single one in a list: "
            f"callbacks=[{type(callbacks).__name__}()]")
    for i, cb in enumerate(callbacks):
        if isinstance(cb, (str, bytes)):
            raise ConfigValueError(
                config, "callbacks", callbacks,
                f"callbacks[{i}] is the string {cb!r}; in Python pass callback objects, e.g. callbacks={example} "
                f"(from rafter.train.callbacks); names like 'tensorboard' are for job files")
        if isinstance(cb, type):
            raise ConfigValueError(
                config, "callbacks", callbacks,
                f"callbacks[{i}] is the class {cb.__name__}, not an instance; pass callbacks=[{cb.__name__}()]")
        from rafter.train._callback import RayTrainCallback

        if not isinstance(cb, RayTrainCallback) and not any(callable(getattr(cb, h, None)) for h in CALLBACK_HOOKS):
            raise ConfigValueError(
                config, "callbacks", callbacks,
                f"callbacks[{i}] ({type(cb).__name__}) has none of the callback hooks ({', '.join(CALLBACK_HOOKS)}); "
                f"subclass rafter.train.Callback and override the ones you need")
    return list(callbacks)


_REMOVED_RUN = {
    "verbose": "set how much rafter says with RunConfig(logging_config=LoggingConfig(log_level='WARNING'))",
    "sync_config": "checkpoints are written straight to storage_path (on a cluster, storage every node can "
                   "reach), so remove sync_config",
    "stop": "return from the train function when it should stop",
    "progress_reporter": "pass a callback in RunConfig(callbacks=[...]) to see each report",
    "log_to_file": "every rank's output is always written to <storage_path>/<name>/logs/rank_<N>.log",
}


@with_removed_arguments("RunConfig", _REMOVED_RUN)
@dataclass
class RunConfig:
    """Where a run's results, checkpoints and logs go, and how it reacts to failures.

    Attributes:
        name: run folder name under ``storage_path``. Re-running ``fit()`` with the same name and
            storage path resumes from the run's latest checkpoint.
        storage_path: a local folder or an fsspec URI (``s3://bucket/x``, ``memory://x``).
            Default ``~/rafter_results``.
        storage_filesystem: a ``pyarrow.fs.FileSystem`` or an fsspec filesystem that ``storage_path`` is a
            path on (e.g. ``RunConfig(storage_path="bucket/runs", storage_filesystem=pyarrow.fs.S3FileSystem())``).
            Workers get it pickled, so it must pickle (pyarrow's and most fsspec ones do).
        failure_config, checkpoint_config: see those classes.
        callbacks: objects with any of the hooks of :class:`rafter.train.Callback`.
        cluster: ``"auto"`` (Ray when ``ray.is_initialized()`` or ``RAY_ADDRESS`` is set, else local),
            ``"local"`` or ``"ray"``.
        cluster_address: Ray address for ``cluster="ray"`` (default: ``RAY_ADDRESS`` or a running cluster).
        hang_timeout_s: a rank that makes no progress (no report, no step) for this long is declared
            hung, every rank's stack is dumped and the run fails. None: derived from observed step times.
        memory_threshold: fraction of the machine's memory in use at which rafter stops the largest
            worker (reported as out of memory) instead of letting the kernel pick a victim.
        logging_config: see :class:`LoggingConfig`; None leaves the ``rafter`` logger's level as you set
            it (INFO if you didn't) and echoes worker output.
    """

    name: Optional[str] = None
    storage_path: Optional[str] = None
    storage_filesystem: Optional[Any] = None
    failure_config: Optional[FailureConfig] = None
    checkpoint_config: Optional[CheckpointConfig] = None
    callbacks: Optional[List[Any]] = None
    cluster: str = "auto"
    cluster_address: Optional[str] = None
    hang_timeout_s: Optional[float] = None
    memory_threshold: float = 0.95
    logging_config: Optional[LoggingConfig] = None

    def __post_init__(self) -> None:
        name = "RunConfig"
        if self.name is None:
            self.name = _default_run_name()
        check_folder_name(name, "name", self.name, "my_run")
        if self.storage_path is None:
            self.storage_path = default_storage_path()
        self.storage_path = check_path(name, "storage_path", self.storage_path, "~/rafter_results")
        if self.storage_filesystem is not None:
            from rafter._storage import as_fsspec

            try:
                as_fsspec(self.storage_filesystem)
            except TypeError as exc:
                raise ConfigTypeError(name, "storage_filesystem", self.storage_filesystem,
                                      str(exc).split(": ", 1)[1].rstrip(".")) from None
        check_instance(name, "failure_config", self.failure_config, FailureConfig, "FailureConfig(max_failures=3)")
        check_instance(name, "checkpoint_config", self.checkpoint_config, CheckpointConfig,
                       "CheckpointConfig(num_to_keep=2)")
        if self.failure_config is None:
            self.failure_config = FailureConfig()
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        self.callbacks = [] if self.callbacks is None else check_callbacks(name, self.callbacks)
        check_choice(name, "cluster", self.cluster, ("auto", "local", "ray"))
        check_optional_str(name, "cluster_address", self.cluster_address, "ray://head:10001")
        if self.cluster == "local" and self.cluster_address is not None:
            warnings.warn(f"RunConfig(cluster_address={self.cluster_address!r}) is ignored with cluster='local'; "
                          f"use cluster='ray' (or 'auto') to run on that cluster.", UserWarning, stacklevel=4)
        check_instance(name, "logging_config", self.logging_config, LoggingConfig, "LoggingConfig(log_level='INFO')")
        if self.hang_timeout_s is not None and (not is_number(self.hang_timeout_s) or self.hang_timeout_s <= 0):
            raise ConfigValueError(name, "hang_timeout_s", self.hang_timeout_s, "expected a number of seconds > 0",
                                   600)
        if not is_number(self.memory_threshold) or not 0 < self.memory_threshold <= 1:
            raise ConfigValueError(name, "memory_threshold", self.memory_threshold, "expected a fraction in (0, 1]",
                                   0.95)
