"""The Lightning strategies, cluster environment, report callback and ``prepare_trainer`` (Ray's names).

The strategies differ from Lightning's only where the run decides: the device is
``rafter.train.torch.get_device()`` and the distributed sampler gets the run's world size and rank.
Lightning finds rafter's process group already initialised and uses it, so ``process_group_backend``
and ``timeout`` are set with ``TorchConfig(backend=..., timeout_s=...)``, not on the strategy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, Optional

import torch

from rafter import train
from rafter._worker.alone import warn
from rafter.train._checkpoint import Checkpoint


def import_lightning():
    try:
        import lightning.pytorch as pl
    except ModuleNotFoundError:
        try:
            import pytorch_lightning as pl
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "rafter.train.lightning needs PyTorch Lightning, which can't be imported. "
                "Install it: pip install lightning   (or pip install 'rafter-train[lightning]')"
            ) from None
    return pl


pl = import_lightning()

try:
    from lightning.pytorch.plugins.environments import LightningEnvironment
except ModuleNotFoundError:
    from pytorch_lightning.plugins.environments import LightningEnvironment


class _RayStrategyMixin:
    """In a worker Lightning finds rafter's process group and uses it. In local mode (``num_workers=0``) there
    is none: Lightning creates a group of one, and teardown removes it again (and the MASTER_ADDR/PORT it
    set), so the calling process is left as it was."""

    _group_env: Optional[Dict[str, Optional[str]]] = None  # set when Lightning creates the group itself

    def setup_environment(self) -> None:
        if not torch.distributed.is_initialized():
            self._group_env = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
        super().setup_environment()

    def teardown(self) -> None:
        super().teardown()
        if self._group_env is not None:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in self._group_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._group_env = None

    @property
    def root_device(self) -> torch.device:
        from rafter.train.torch import get_device

        return get_device()

    @property
    def distributed_sampler_kwargs(self) -> Dict[str, Any]:
        return dict(num_replicas=self.world_size, rank=self.global_rank)


class RayDDPStrategy(_RayStrategyMixin, pl.strategies.DDPStrategy):
    """Lightning's ``DDPStrategy`` on rafter's workers; it takes the same arguments.

    ``process_group_backend``, ``timeout`` and ``start_method`` have no effect: rafter starts the
    processes and the process group (set ``TorchConfig(backend=..., timeout_s=...)`` instead).
    """


class RayFSDPStrategy(_RayStrategyMixin, pl.strategies.FSDPStrategy):
    """Lightning's ``FSDPStrategy`` on rafter's workers; it takes the same arguments (``lightning>=2.1``
    handles ``state_dict_type``, ``sharding_strategy``, ``auto_wrap_policy`` itself). Needs GPUs, as
    Lightning's FSDP does."""

    def setup_environment(self) -> None:
        if self.root_device.type == "cpu":
            raise RuntimeError(
                "RayFSDPStrategy needs GPUs (Lightning's FSDP has no CPU implementation), but this worker's "
                "device is the CPU. Fix: run with ScalingConfig(use_gpu=True) on GPU machines, or train on "
                "CPUs with strategy=RayDDPStrategy() (or shard on CPU without Lightning: "
                "rafter.train.torch.prepare_model(model, parallel_strategy=\"fsdp\"))."
            )
        super().setup_environment()


class RayLightningEnvironment(LightningEnvironment):
    """The world size and the global, local and node ranks of this rafter worker, for Lightning."""

    @property
    def creates_processes_externally(self) -> bool:
        return True  # rafter started this process; Lightning must not launch more

    def world_size(self) -> int:
        return train.get_context().get_world_size()

    def global_rank(self) -> int:
        return train.get_context().get_world_rank()

    def local_rank(self) -> int:
        return train.get_context().get_local_rank()

    def node_rank(self) -> int:
        return train.get_context().get_node_rank()

    def set_world_size(self, size: int) -> None:
        pass  # world_size() reads the run's value

    def set_global_rank(self, rank: int) -> None:
        pass  # global_rank() reads the run's value

    def teardown(self) -> None:
        pass  # the process group and its environment variables belong to rafter


_STRATEGIES = (RayDDPStrategy, RayFSDPStrategy)
_STRATEGY_FIX = (
    "pl.Trainer(..., strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()])  "
    "# from rafter.train.lightning import RayDDPStrategy, RayLightningEnvironment"
)


def prepare_trainer(trainer: "pl.Trainer") -> "pl.Trainer":
    """Check that a Lightning ``Trainer`` is set up for a rafter run; returns it.

    Raises ``RuntimeError`` (as Ray Train does) when the strategy isn't one of rafter's (with Lightning's
    own single-device or DDP strategy each worker would train alone, or try to start processes) or when
    the cluster environment isn't ``RayLightningEnvironment``.
    """
    strategy = trainer.strategy
    if not isinstance(strategy, _STRATEGIES):
        raise RuntimeError(
            f"prepare_trainer(): the Lightning Trainer's strategy is {type(strategy).__name__}; on "
            f"{train.get_context().get_world_size()} rafter workers it must be one of "
            f"{', '.join(c.__name__ for c in _STRATEGIES)} (or a subclass), otherwise the workers don't train "
            f"together. Fix: {_STRATEGY_FIX}"
        )
    environment = getattr(strategy, "cluster_environment", None)
    if environment is not None and not isinstance(environment, RayLightningEnvironment):
        raise RuntimeError(
            f"prepare_trainer(): the Lightning Trainer's cluster environment is {type(environment).__name__}, "
            f"which doesn't know rafter's ranks. Fix: pl.Trainer(..., plugins=[RayLightningEnvironment()])  "
            f"# from rafter.train.lightning import RayLightningEnvironment"
        )
    return trainer


class RayTrainReportCallback(pl.callbacks.Callback):
    """At the end of every training epoch, report ``trainer.callback_metrics`` (plus ``epoch`` and ``step``)
    with a Lightning checkpoint of the whole training state::

        checkpoint_00000N/      rafter's checkpoint
        └─ checkpoint.ckpt      Lightning's checkpoint (resume: trainer.fit(model, ckpt_path=...))

    ``checkpoint_upload_mode`` and ``validation`` exist for Ray Train compatibility: rafter uploads each
    checkpoint before ``report`` returns and has no asynchronous validation, so only the defaults are accepted.
    """

    CHECKPOINT_NAME = "checkpoint.ckpt"

    def __init__(self, checkpoint_upload_mode: Optional[Any] = None, validation: bool = False) -> None:
        super().__init__()
        mode = getattr(checkpoint_upload_mode, "name", checkpoint_upload_mode)
        if mode not in (None, "SYNC"):
            raise ValueError(
                f"RayTrainReportCallback(checkpoint_upload_mode={checkpoint_upload_mode!r}): rafter uploads "
                f"checkpoints synchronously only. Remove the argument."
            )
        if validation:
            raise ValueError(
                "RayTrainReportCallback(validation=True): rafter has no asynchronous checkpoint validation. "
                "Remove the argument and validate in the train function (e.g. Lightning's validation loop)."
            )
        self.checkpoint_upload_mode = checkpoint_upload_mode
        self.validation = validation

    def setup(self, trainer, pl_module, stage: str) -> None:
        world_size = train.get_context().get_world_size()
        if world_size > 1 and not isinstance(trainer.strategy, _STRATEGIES):
            warn(
                f"RayTrainReportCallback: the Lightning Trainer runs {type(trainer.strategy).__name__} on each of "
                f"the {world_size} rafter workers, so each trains its own copy of the model, alone. "
                f"Fix: {_STRATEGY_FIX}; then trainer = prepare_trainer(trainer)"
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in trainer.callback_metrics.items()}
        metrics["epoch"] = trainer.current_epoch
        metrics["step"] = trainer.global_step
        ctx = train.get_context()
        tmpdir = tempfile.mkdtemp(prefix=f"rafter-lightning-{ctx.get_experiment_name()}-rank{ctx.get_world_rank()}-")
        try:
            # every rank takes part (sharded strategies gather state); only rank 0 writes the file
            trainer.save_checkpoint(os.path.join(tmpdir, self.CHECKPOINT_NAME), weights_only=False)
            train.report(metrics, checkpoint=Checkpoint.from_directory(tmpdir))
            trainer.strategy.barrier()  # every worker reported before any deletes its folder
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
