"""Argument checks of the helpers a train function calls (``prepare_model``, ``prepare_data_loader``, ...).

They run first, before the "only inside a train function" check, so a wrong argument is named as such
wherever the call is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rafter.train._validation import ConfigTypeError, ConfigValueError, check_bool, check_choice, check_path, is_int

MAX_SEED = 2**32 - 1  # numpy's bound; torch and random accept it too


def check_instance_of(fn: str, field: str, value: Any, cls: type, what: str) -> None:
    if not isinstance(value, cls):
        raise ConfigTypeError(fn, field, value, f"expected {what}, got {type(value).__name__}")


def check_optional_mapping(fn: str, field: str, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ConfigTypeError(fn, field, value, f"expected a dict of keyword arguments (or None), got "
                                                f"{type(value).__name__}", {})


def check_prepare_model(model: Any, move_to_device: Any, parallel_strategy: Any, kwargs: Any) -> None:
    fn = "prepare_model"
    check_instance_of(fn, "model", model, torch.nn.Module, "a torch.nn.Module")
    if not isinstance(move_to_device, (bool, torch.device)):
        try:
            torch.device(move_to_device)
        except (RuntimeError, TypeError, ValueError):
            raise ConfigTypeError(fn, "move_to_device", move_to_device,
                                  "expected True, False or a torch.device (such as torch.device('cuda:0'))",
                                  True) from None
    check_choice(fn, "parallel_strategy", parallel_strategy, ("ddp", "fsdp"), nullable=True)
    check_optional_mapping(fn, "parallel_strategy_kwargs", kwargs)


def check_prepare_data_loader(data_loader: Any, add_dist_sampler: Any, move_to_device: Any, auto_transfer: Any) -> None:
    fn = "prepare_data_loader"
    check_instance_of(fn, "data_loader", data_loader, torch.utils.data.DataLoader, "a torch.utils.data.DataLoader")
    for name, value in (("add_dist_sampler", add_dist_sampler), ("move_to_device", move_to_device),
                        ("auto_transfer", auto_transfer)):
        check_bool(fn, name, value)


def check_seed(seed: Any) -> None:
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigValueError("enable_reproducibility", "seed", seed, f"expected an int from 0 to {MAX_SEED}", 0)


def check_state_args(fn: str, model: Any, optimizer: Any) -> None:
    check_instance_of(fn, "model", model, torch.nn.Module, "a torch.nn.Module (the prepared model)")
    if optimizer is not None:
        check_instance_of(fn, "optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer or None")


def check_load_args(path: Any, weights_only: Any) -> None:
    fn = "load_checkpoint_file"
    check_path(fn, "path", path, "model.pt", empty="an empty path names no file; give the checkpoint file's path")
    check_bool(fn, "weights_only", weights_only)  # "False" (a str) would mean True
