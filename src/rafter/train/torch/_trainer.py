"""``TorchTrainer``: the entry point, as in ``ray.train.torch.TorchTrainer``."""

from __future__ import annotations

import functools

from typing import Any, Callable, Dict, Optional

from rafter.train._config import RunConfig, ScalingConfig
from rafter.train._result import Result
from rafter.train._validation import with_removed_arguments
from rafter.train.torch import _trainer_checks as checks
from rafter.train._torch_config import TorchConfig


@with_removed_arguments("TorchTrainer", checks.REMOVED, checks.UNSUPPORTED)
class TorchTrainer:
    """Run ``train_loop_per_worker`` on ``scaling_config.num_workers`` workers with a torch process group.

    ``fit()`` returns a :class:`~rafter.train.Result`, or raises :class:`~rafter.train.TrainingFailedError`
    whose message opens with the rank and the root cause of the failure.

    ``datasets={name: ray.data.Dataset}`` (needs Ray Data) are sharded per worker as ``dataset_config``
    (a :class:`~rafter.train.DataConfig`) says; a worker reads its shard with ``train.get_dataset_shard(name)``.
    """

    def __init__(
        self,
        train_loop_per_worker: Callable,
        *,
        train_loop_config: Optional[Dict[str, Any]] = None,
        torch_config: Optional[TorchConfig] = None,
        scaling_config: Optional[ScalingConfig] = None,
        run_config: Optional[RunConfig] = None,
        datasets: Optional[Dict[str, Any]] = None,
        dataset_config: Optional[Any] = None,
    ) -> None:
        checks.check_trainer_arguments(train_loop_per_worker, train_loop_config, torch_config, scaling_config,
                                       run_config)
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.torch_config = torch_config or TorchConfig()
        self.scaling_config = scaling_config or ScalingConfig()
        self.run_config = run_config or RunConfig()
        if datasets is not None:
            from rafter._controller.datasets import check_datasets

            datasets = check_datasets(datasets)
        self.datasets = datasets or {}
        self.dataset_config = dataset_config
        self._monitors: list = []  # extra controller monitors (rafter.testing.ChaosMonkey)
        self._fault = None  # a fault armed by rafter.testing.inject_fault

    restore = classmethod(checks.restore_removed)  # removed in Ray Train V2; raises, saying what to do
    can_restore = classmethod(checks.can_restore_removed)

    def fit(self) -> Result:
        from rafter._controller import local_mode
        from rafter._controller.user_callbacks import UserCallbacks

        local_mode.refuse_workers_under_torchrun(self.scaling_config.num_workers)
        if self.scaling_config.num_workers == 0:
            return local_mode.run(self)
        from rafter._controller.controller import Controller
        from rafter._controller.datasets import DatasetShards, materialize
        from rafter._controller.reported_checkpoints import ReportedCheckpointsHub

        datasets = materialize(self.datasets) if self.datasets else {}

        controller = Controller(
            self.train_loop_per_worker,
            self.train_loop_config,
            self.scaling_config,
            self.run_config,
            backend_name=self.torch_config.resolve_backend(self.scaling_config.use_gpu),
            timeout_s=self.torch_config.timeout_s,
        )
        controller.monitors.extend([*self._monitors, ReportedCheckpointsHub,
                                    functools.partial(DatasetShards, datasets=datasets, config=self.dataset_config)])
        controller.fault = self._fault
        controller.user_callbacks = UserCallbacks.for_run(self)
        return controller.fit()
