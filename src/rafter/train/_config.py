"""Configuration objects, named and defaulted as in Ray Train 2.60.

Each object validates what it can on construction (types, ranges); checks that depend on the
machine or cluster (enough GPUs?) happen when ``fit()`` starts, before any process is created.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

_KNOWN_RESOURCES = ("CPU", "GPU", "memory")
_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ScalingConfig:
    """How many workers to run and what each one gets.

    Attributes:
        num_workers: number of training processes (ranks).
        use_gpu: give each worker one GPU and use NCCL.
        resources_per_worker: e.g. ``{"CPU": 2, "GPU": 1, "memory": 8 * 2**30}``. ``CPU`` sets the
            worker's torch intra-op thread count (default 1); ``memory`` (bytes) is a limit rafter
            enforces. Other keys are custom Ray resources and need the Ray backend.
        placement_strategy: Ray placement-group strategy (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD).
        accelerator_type: Ray accelerator type, e.g. ``"A100"`` (Ray backend only).
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: Optional[Dict[str, float]] = None
    placement_strategy: str = "PACK"
    accelerator_type: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(
                f"ScalingConfig(num_workers={self.num_workers!r}): num_workers must be a positive int, "
                f"e.g. ScalingConfig(num_workers=4)."
            )
        if not isinstance(self.use_gpu, bool):
            raise ValueError(f"ScalingConfig(use_gpu={self.use_gpu!r}): use_gpu must be True or False.")
        if self.placement_strategy not in _STRATEGIES:
            raise ValueError(
                f"ScalingConfig(placement_strategy={self.placement_strategy!r}): expected one of "
                f"{', '.join(_STRATEGIES)}."
            )
        resources = self.resources_per_worker
        if resources is None:
            return
        if not isinstance(resources, dict):
            raise ValueError(
                f"ScalingConfig(resources_per_worker={resources!r}): expected a dict such as "
                f'{{"CPU": 2}}.'
            )
        for key, value in resources.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"ScalingConfig(resources_per_worker): resource name {key!r} must be a non-empty str.")
            if not _is_number(value) or value < 0:
                raise ValueError(
                    f"ScalingConfig(resources_per_worker={{{key!r}: {value!r}}}): a resource amount must be "
                    f"a number >= 0."
                )
        gpus = resources.get("GPU", 0)
        if gpus and not self.use_gpu:
            raise ValueError(
                f"ScalingConfig(resources_per_worker={{'GPU': {gpus}}}) with use_gpu=False: set use_gpu=True "
                f"to give workers GPUs."
            )

    # Derived views -------------------------------------------------------------------------
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
        total = {"CPU": self.cpus_per_worker * self.num_workers, "GPU": self.gpus_per_worker * self.num_workers}
        for key, value in (self.resources_per_worker or {}).items():
            if key not in ("CPU", "GPU"):
                total[key] = value * self.num_workers
        return total


@dataclass
class FailureConfig:
    """How many worker-group failures to recover from.

    Attributes:
        max_failures: restarts allowed after a worker fails (0: none; -1: unlimited). Each restart starts
            a fresh group of workers from the latest committed checkpoint.
    """

    max_failures: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ValueError(
                f"FailureConfig(max_failures={self.max_failures!r}): expected an int >= 0, or -1 for unlimited."
            )


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
        if self.num_to_keep is not None and (
            isinstance(self.num_to_keep, bool) or not isinstance(self.num_to_keep, int) or self.num_to_keep < 1
        ):
            raise ValueError(
                f"CheckpointConfig(num_to_keep={self.num_to_keep!r}): expected an int >= 1, or None to keep all."
            )
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError(
                f"CheckpointConfig(checkpoint_score_order={self.checkpoint_score_order!r}): expected 'max' or 'min'."
            )


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
            raise ValueError(f"LoggingConfig(log_level={self.log_level!r}): expected one of {', '.join(names)}.")
        self.log_level = self.log_level.upper()


def _default_run_name() -> str:
    return "rafter_run-" + datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


@dataclass
class RunConfig:
    """Where a run's results, checkpoints and logs go, and how it reacts to failures.

    Attributes:
        name: run folder name under ``storage_path``. Re-running ``fit()`` with the same name and
            storage path resumes from the run's latest checkpoint.
        storage_path: a local folder or an fsspec URI (``s3://bucket/x``, ``memory://x``).
            Default ``~/rafter_results``.
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
    failure_config: Optional[FailureConfig] = None
    checkpoint_config: Optional[CheckpointConfig] = None
    callbacks: Optional[List[Any]] = None
    cluster: str = "auto"
    cluster_address: Optional[str] = None
    hang_timeout_s: Optional[float] = None
    memory_threshold: float = 0.95
    logging_config: Optional[LoggingConfig] = None
    verbose: int = field(default=1, repr=False)

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = _default_run_name()
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"RunConfig(name={self.name!r}): expected a non-empty folder name without '/'.")
        if self.storage_path is None:
            self.storage_path = os.path.join(os.path.expanduser("~"), "rafter_results")
        self.storage_path = os.fspath(self.storage_path)
        if self.failure_config is None:
            self.failure_config = FailureConfig()
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        if self.callbacks is None:
            self.callbacks = []
        if self.logging_config is not None and not isinstance(self.logging_config, LoggingConfig):
            raise TypeError(f"RunConfig(logging_config=...): expected a LoggingConfig, got "
                            f"{type(self.logging_config).__name__}.")
        if self.cluster not in ("auto", "local", "ray"):
            raise ValueError(f"RunConfig(cluster={self.cluster!r}): expected 'auto', 'local' or 'ray'.")
        if self.hang_timeout_s is not None and (not _is_number(self.hang_timeout_s) or self.hang_timeout_s <= 0):
            raise ValueError(f"RunConfig(hang_timeout_s={self.hang_timeout_s!r}): expected a number of seconds > 0.")
        if not _is_number(self.memory_threshold) or not 0 < self.memory_threshold <= 1:
            raise ValueError(
                f"RunConfig(memory_threshold={self.memory_threshold!r}): expected a fraction in (0, 1], e.g. 0.95."
            )
