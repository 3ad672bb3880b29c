"""``TorchTrainer``'s argument checks, and the Ray arguments it refuses (removed in V2, or not supported)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

from rafter.train._config import RunConfig, ScalingConfig
from rafter.train._validation import (
    ConfigTypeError,
    ConfigValueError,
    check_instance,
    removed_in_v2,
    required_arguments,
    takes_arguments,
)
from rafter.train._torch_config import TorchConfig, check_backend_fits

NAME = "TorchTrainer"
RESUME = ("call fit() again with the same RunConfig(name=..., storage_path=...): it resumes from the run's latest "
          "checkpoint, which the train function gets from rafter.train.get_checkpoint()")
REMOVED = {
    "resume_from_checkpoint": RESUME,
    "metadata": "store what you need in the checkpoint, e.g. checkpoint.set_metadata({...}) before report()",
}
UNSUPPORTED = {
    "validation_config": "validate in the train function and report the metrics with rafter.train.report()",
}


def check_train_function(fn: Any, train_loop_config: Any) -> None:
    if not callable(fn) or isinstance(fn, (str, bytes)):
        raise ConfigTypeError(NAME, "train_loop_per_worker", fn, "expected a function taking () or (config)")
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        kind = "a generator function (it uses yield)" if inspect.isgeneratorfunction(fn) else "an async function"
        raise ConfigTypeError(
            NAME, "train_loop_per_worker", fn,
            f"{getattr(fn, '__name__', fn)} is {kind}: calling it returns at once without running its body; "
            f"make it a plain def that trains and returns")
    required = required_arguments(fn)
    if required is not None and len(required) > 1:
        raise ConfigValueError(
            NAME, "train_loop_per_worker", fn,
            f"the function takes {len(required)} required arguments ({', '.join(required)}); it is called with one "
            f"(train_loop_config) or none, so define it as def {getattr(fn, '__name__', 'train_func')}(config)")
    if train_loop_config is not None and not isinstance(train_loop_config, Mapping):
        raise ConfigTypeError(
            NAME, "train_loop_config", train_loop_config,
            f"expected a dict (or None), got {type(train_loop_config).__name__}; wrap the value in a dict, e.g. "
            f"train_loop_config={{'value': ...}}")
    if train_loop_config and takes_arguments(fn) is False:
        warnings.warn(
            f"TorchTrainer(train_loop_config=...) is ignored: {getattr(fn, '__name__', fn)!s} takes no arguments. "
            f"Define it as def {getattr(fn, '__name__', 'train_func')}(config): ... to receive it.",
            UserWarning, stacklevel=5)  # through check_trainer_arguments, __init__ and its wrapper


def check_trainer_arguments(fn: Any, train_loop_config: Any, torch_config: Any, scaling_config: Any,
                            run_config: Any) -> None:
    check_train_function(fn, train_loop_config)
    check_instance(NAME, "scaling_config", scaling_config, ScalingConfig, "ScalingConfig(num_workers=2)")
    check_instance(NAME, "run_config", run_config, RunConfig, "RunConfig(name='my_run')")
    check_instance(NAME, "torch_config", torch_config, TorchConfig, "TorchConfig(backend='gloo')")
    check_backend_fits(torch_config, scaling_config or ScalingConfig())


def restore_removed(*_args: Any, **_kwargs: Any):
    raise removed_in_v2("TorchTrainer.restore()", RESUME)


def can_restore_removed(*_args: Any, **_kwargs: Any):
    raise removed_in_v2("TorchTrainer.can_restore()", RESUME)
