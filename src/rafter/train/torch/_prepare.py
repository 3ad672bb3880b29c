"""Helpers a train function calls: devices, model wrapping, data-loader sharding, reproducibility."""

from __future__ import annotations

import os
import random
from typing import Any, Dict, List, Optional, Union

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from rafter._worker.session import require_session
from rafter.train.torch import _arg_checks as checks


def get_device() -> torch.device:
    """This worker's device: ``cuda:<local index>`` with ``use_gpu=True``, else ``cpu``."""
    spec = require_session("torch.get_device").spec
    if spec.use_gpu and spec.device_index is not None:
        return torch.device("cuda", spec.device_index)
    return torch.device("cpu")


def get_devices() -> List[torch.device]:
    return [get_device()]


def _world_size() -> int:
    return require_session("torch.prepare_model").spec.world_size


def prepare_model(
    model: torch.nn.Module,
    move_to_device: Union[bool, torch.device] = True,
    parallel_strategy: Optional[str] = "ddp",
    parallel_strategy_kwargs: Optional[Dict[str, Any]] = None,
) -> torch.nn.Module:
    """Move ``model`` to this worker's device and wrap it for data parallelism when world size > 1.

    ``parallel_strategy``: "ddp" (DistributedDataParallel, only with 2+ workers), "fsdp" (FSDP2
    ``fully_shard``, see ``rafter.train.torch._fsdp``; also with one worker) or None.
    ``parallel_strategy_kwargs`` go to DistributedDataParallel or ``fully_shard`` respectively. Save and load
    the model with ``rafter.train.torch.get_state_dict`` / ``load_state_dict`` (one full state dict).
    """
    checks.check_prepare_model(model, move_to_device, parallel_strategy, parallel_strategy_kwargs)
    require_session("torch.prepare_model")
    device = get_device()
    if move_to_device is not False:
        target = device if move_to_device is True else torch.device(move_to_device)
        if target.type == "cuda":
            torch.cuda.set_device(target)
        model = model.to(target)
    kwargs = dict(parallel_strategy_kwargs or {})
    if parallel_strategy is None:
        return model
    if parallel_strategy == "fsdp":
        # Sharded even with one worker: mp_policy then still applies, and the model (an FSDPModule with
        # DTensor parameters) is the same kind of object whatever the number of workers.
        from rafter.train.torch._fsdp import shard_model

        return shard_model(model, device, kwargs)
    if _world_size() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        kwargs.setdefault("device_ids", [device.index])
        kwargs.setdefault("output_device", device.index)
    return DistributedDataParallel(model, **kwargs)


class _DeviceLoader:
    """Iterates a DataLoader and moves each batch to the device."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self._loader = loader
        self._device = device

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __iter__(self):
        for batch in self._loader:
            yield _move(batch, self._device)


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_move(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def prepare_data_loader(
    data_loader: DataLoader,
    add_dist_sampler: bool = True,
    move_to_device: bool = True,
    auto_transfer: bool = True,
):
    """Shard ``data_loader`` across workers with a ``DistributedSampler`` and move batches to the device.

    Shuffling follows the original loader (a ``RandomSampler`` means shuffle). Call
    ``loader.sampler.set_epoch(epoch)`` each epoch for a new shuffle order, as with any DistributedSampler.
    """
    checks.check_prepare_data_loader(data_loader, add_dist_sampler, move_to_device, auto_transfer)
    spec = require_session("torch.prepare_data_loader").spec
    loader = data_loader
    if add_dist_sampler and spec.world_size > 1 and not isinstance(loader.sampler, DistributedSampler):
        if loader.batch_sampler is not None and loader.batch_size is None:
            raise ValueError(
                "prepare_data_loader(): this DataLoader uses a custom batch_sampler, which rafter can't shard. "
                "Shard it yourself with rank=train.get_context().get_world_rank(), or pass add_dist_sampler=False."
            )
        shuffle = isinstance(loader.sampler, RandomSampler)
        sampler = DistributedSampler(
            loader.dataset, num_replicas=spec.world_size, rank=spec.rank, shuffle=shuffle,
            seed=int(os.environ.get("RAFTER_SEED", "0")),
        )
        loader = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
            persistent_workers=loader.persistent_workers,
        )
    device = get_device()
    if move_to_device and auto_transfer and device.type != "cpu":
        return _DeviceLoader(loader, device)
    return loader


def enable_reproducibility(seed: int = 0) -> None:
    """Seed every RNG and make torch deterministic (slower, but the same result every run)."""
    checks.check_seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ["RAFTER_SEED"] = str(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
