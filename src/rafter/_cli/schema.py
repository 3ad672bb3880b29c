"""The keys a job file may hold, their YAML types, defaults and examples.

Defaults come from the config classes themselves (``rafter.train._config`` and, torch-free,
``rafter.train._torch_config``).
Ranges and enumerations are checked by the config classes; this table checks types and names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

from rafter.train._config import PLACEMENT_STRATEGIES, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from rafter.train._torch_config import TorchConfig

REQUIRED = object()

# YAML kinds: int, number, bool, str, mapping (any keys), resources (str -> number), callbacks (list)
KIND_NAMES = {
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "str": "a string",
    "mapping": "a mapping (key: value lines)",
    "resources": "a mapping of resource name to amount, e.g. {CPU: 2}",
    "callbacks": "a list of trackers, e.g. [tensorboard]",
    "workers": "an integer, or an elastic range [min, max]",
}


@dataclass(frozen=True)
class Field:
    kind: str
    example: Any
    doc: str
    default: Any = None
    nullable: bool = False
    choices: Tuple[str, ...] = ()
    fix: Optional[str] = None  # said instead of the generic "e.g. <example>" fix


def _default(cls, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(name)



# Section name -> (config class name as its messages spell it, {key: Field}).
SECTIONS: Dict[str, Tuple[str, Dict[str, Field]]] = {
    "scaling": ("ScalingConfig", {
        "num_workers": Field("workers", 4, "number of training processes (ranks), or an elastic range [min, max]",
                             _default(ScalingConfig, "num_workers")),
        "use_gpu": Field("bool", True, "one GPU per worker, NCCL", _default(ScalingConfig, "use_gpu")),
        "resources_per_worker": Field(
            "resources", {"CPU": 2}, "CPU (torch threads), GPU, memory (bytes), custom Ray resources",
            _default(ScalingConfig, "resources_per_worker"), nullable=True,
            fix="give amounts >= 0 per resource, e.g. resources_per_worker: {CPU: 2}; a GPU amount needs "
                "scaling.use_gpu: true",
        ),
        "placement_strategy": Field(
            "str", "PACK", "Ray placement strategy", _default(ScalingConfig, "placement_strategy"),
            choices=PLACEMENT_STRATEGIES,
        ),
        "accelerator_type": Field("str", "A100", "Ray accelerator type", None, nullable=True),
        "elastic_resize_monitor_interval_s": Field("number", 60, "elastic runs: seconds between looks for room to grow",
                                                   _default(ScalingConfig, "elastic_resize_monitor_interval_s")),
    }),
    "run": ("RunConfig", {
        "name": Field("str", "my_run", "run folder name (default: rafter_run-<date>_<time>)", None, nullable=True),
        "storage_path": Field("str", "~/rafter_results", "local folder or fsspec URI (default ~/rafter_results)",
                              None, nullable=True),
        "hang_timeout_s": Field("number", 600, "seconds without progress before a rank is declared hung",
                                _default(RunConfig, "hang_timeout_s"), nullable=True),
        "memory_threshold": Field("number", 0.95, "fraction of memory in use at which rafter stops a worker",
                                  _default(RunConfig, "memory_threshold")),
        "callbacks": Field("callbacks", ["tensorboard"], "trackers: tensorboard, mlflow, wandb or module:Class", [],
                           nullable=True),
    }),
    "failure": ("FailureConfig", {
        "max_failures": Field("int", 3, "restarts allowed (-1: unlimited)", _default(FailureConfig, "max_failures")),
        "max_preemption_failures": Field("int", -1, "restarts allowed after preemptions (-1: unlimited)",
                                         _default(FailureConfig, "max_preemption_failures")),
        "preemption_grace_s": Field("number", 60, "seconds the workers get to checkpoint on a preemption (0: 30)",
                                    _default(FailureConfig, "preemption_grace_s")),
        "relax_collectives_on_preemption": Field("bool", False, "accepted for Ray Train compatibility (no effect)",
                                                 _default(FailureConfig, "relax_collectives_on_preemption")),
    }),
    "checkpoint": ("CheckpointConfig", {
        "num_to_keep": Field("int", 2, "checkpoints kept (null: all)", None, nullable=True),
        "checkpoint_score_attribute": Field("str", "loss", "metric that ranks checkpoints", None, nullable=True),
        "checkpoint_score_order": Field("str", "min", "max or min", _default(CheckpointConfig, "checkpoint_score_order"),
                                        choices=("max", "min")),
    }),
    "torch": ("TorchConfig", {
        "backend": Field("str", "gloo", "gloo or nccl (null: nccl with GPUs, else gloo)",
                         _default(TorchConfig, "backend"),
                         nullable=True, choices=("gloo", "nccl")),
        "timeout_s": Field("number", 1800, "timeout of collective operations", _default(TorchConfig, "timeout_s")),
    }),
}

TOP: Dict[str, Field] = {
    "train": Field("str", "train.py:train_func", "the train function: path/to/file.py:func or package.module:func",
                   REQUIRED),
    "train_loop_config": Field("mapping", {"lr": 0.001}, "passed to the train function as its config", None,
                               nullable=True),
    "cluster": Field("str", "local", "auto, local or ray", _default(RunConfig, "cluster"),
                     choices=("auto", "local", "ray")),
    "address": Field("str", "ray://head:10001", "Ray cluster address for cluster: ray", None, nullable=True),
}

# Names people reach for (the Python API's) -> the job file's.
ALIASES = {
    "train_loop_per_worker": "train", "train_func": "train", "train_fn": "train", "function": "train",
    "config": "train_loop_config", "scaling_config": "scaling", "run_config": "run",
    "failure_config": "failure", "checkpoint_config": "checkpoint", "torch_config": "torch",
    "cluster_address": "address",
}


def top_level_keys() -> Tuple[str, ...]:
    return tuple(TOP) + tuple(SECTIONS)


def field_at(path: str) -> Optional[Field]:
    parts = path.split(".")
    if len(parts) == 1:
        return TOP.get(parts[0])
    if len(parts) == 2 and parts[0] in SECTIONS:
        return SECTIONS[parts[0]][1].get(parts[1])
    return None


def leaves() -> Iterator[Tuple[str, Field]]:
    for key, f in TOP.items():
        yield key, f
    for section, (_cls, fields) in SECTIONS.items():
        for key, f in fields.items():
            yield f"{section}.{key}", f


def section_of_class(class_name: str) -> Optional[str]:
    for section, (cls, _fields) in SECTIONS.items():
        if cls == class_name:
            return section
    return None
