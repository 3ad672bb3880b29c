"""Saving and loading models wrapped by ``prepare_model`` (DDP, FSDP2 or none) as one full state dict.

The approach: **a full (unsharded) state dict, gathered on rank 0 in CPU memory**.

* ``get_state_dict(model, optimizer)`` is collective: every rank calls it; rank 0 gets the whole
  model (and optimizer) state with plain parameter names (no ``module.`` prefix, no DTensors),
  the other ranks get ``{}``. Rank 0 ``torch.save`` s it into a folder and reports it with
  ``train.report(..., checkpoint=Checkpoint.from_directory(folder))``.
* ``load_state_dict(model, state_dict, optimizer)`` is collective too: rank 0 passes the loaded dict,
  the other ranks may pass ``{}``; rank 0 broadcasts it and each rank keeps its own shard.

The file is an ordinary ``torch.save`` of an ordinary state dict, so it loads into an unwrapped
model, a DDP model or an FSDP model with any number of ranks. The cost is that rank 0 must hold the
full model in CPU memory; for models beyond that, use ``torch.distributed.checkpoint`` (sharded
per-rank files) directly.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from torch import nn

from rafter.train.torch import _arg_checks as checks


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_state_dict(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> Dict[str, Any]:
    """The full state of ``model`` (and ``optimizer``), gathered on rank 0 in CPU memory. Collective.

    Returns ``{"model": model_state_dict}`` plus ``"optimizer": optimizer_state_dict`` when an optimizer
    is given, on rank 0; ``{}`` on every other rank. Every rank must call it (FSDP gathers the shards).
    """
    checks.check_state_args("get_state_dict", model, optimizer)
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _options(cpu_offload=True)
    model_sd = get_model_state_dict(model, options=options)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    if _distributed() and dist.get_rank() != 0:
        return {}
    out = {"model": model_sd}
    if optimizer is not None:
        out["optimizer"] = optim_sd
    return out


def load_state_dict(
    model: nn.Module,
    state_dict: Dict[str, Any],
    optimizer: Optional[torch.optim.Optimizer] = None,
    strict: bool = True,
) -> None:
    """Load a full state dict into ``model`` (and ``optimizer``), broadcasting it from rank 0. Collective.

    ``state_dict`` is what :func:`get_state_dict` returned (``{"model": ..., "optimizer": ...}``) or a
    plain model state dict (e.g. from a pretrained checkpoint). Only rank 0's copy is read; the other
    ranks may pass ``{}`` so that only one process holds the full model in memory.
    """
    checks.check_state_args("load_state_dict", model, optimizer)
    if not isinstance(state_dict, dict):
        raise TypeError(f"load_state_dict(state_dict=...): expected a dict, got {type(state_dict).__name__}.")
    wrapped = isinstance(state_dict.get("model"), dict)
    model_sd = state_dict["model"] if wrapped else state_dict
    optim_sd = state_dict.get("optimizer") if wrapped else None
    rank = dist.get_rank() if _distributed() else 0
    if rank == 0:
        if not model_sd:
            raise ValueError(
                "load_state_dict(): rank 0 was given an empty state dict; rank 0 must pass the checkpoint's "
                "contents (the other ranks may pass {}). Load it with load_checkpoint_file(path) on rank 0."
            )
        if optimizer is not None and optim_sd is None:
            raise ValueError(
                "load_state_dict(model, state_dict, optimizer): the state dict has no 'optimizer' entry (keys: "
                f"{sorted(state_dict)[:5]}). Save with get_state_dict(model, optimizer), or load the model only."
            )
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    # Without a process group (a plain script) there is nothing to broadcast to.
    options = _options(broadcast_from_rank0=_distributed(), strict=strict)
    set_model_state_dict(model, model_sd if rank == 0 else {}, options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, optim_sd if rank == 0 else {}, options=options)


def load_checkpoint_file(path: Any, weights_only: bool = True, map_location: Any = "cpu") -> Any:
    """``torch.load(path)`` with ``weights_only=True`` (tensors, dicts, numbers, strings only) unless you
    pass ``weights_only=False``, which executes pickled code from the file: only for files you trust."""
    checks.check_load_args(path, weights_only)
    path = os.fspath(path)
    if not os.path.exists(path):
        folder = os.path.dirname(path) or "."
        listing = sorted(os.listdir(folder))[:10] if os.path.isdir(folder) else "no such folder"
        raise FileNotFoundError(f"load_checkpoint_file({path!r}): no such file. The folder holds: {listing}.")
    return torch.load(path, map_location=map_location, weights_only=weights_only)
