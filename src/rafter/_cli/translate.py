"""Build the config objects from a job's values, re-saying their errors in job-file terms.

The classes check ranges and combinations and raise ``ConfigValueError``, which carries the class, the
argument, the value and an example as fields (``ScalingConfig``, ``num_workers``, 0, 4). This module
says the same facts as the job's key path, its value and the fix in the notation of the job file and
``--set`` (``scaling.num_workers=4``). Nothing here parses message text.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from rafter._cli import schema
from rafter._cli.errors import ConfigError, fix_for, inline
from rafter.train._validation import ConfigValueError, short_repr

# RunConfig's keyword -> the job file's top-level key, for the two that live at the top.
_RUN_TOP = {"cluster": "cluster", "cluster_address": "address"}


def key_path(section: Optional[str], attr: str) -> Optional[str]:
    """``("scaling", "num_workers")`` -> ``"scaling.num_workers"``; None for an argument jobs don't have."""
    if section is None:
        return None
    if attr in schema.SECTIONS[section][1]:
        return f"{section}.{attr}"
    if section == "run" and attr in _RUN_TOP:
        return _RUN_TOP[attr]
    return None


def _value_at(values: Dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def translate(exc: ValueError, section: str, values: Dict[str, Any], origin: Callable[[str], str]) -> ConfigError:
    """One ``ConfigError`` for a config class's error; ``section`` is where the job built that class."""
    if not isinstance(exc, ConfigValueError):
        return ConfigError(str(exc), source=origin(section), path=section)
    own = schema.section_of_class(exc.config)

    def setting(field: str, value: Any, config: str) -> str:
        path = key_path(schema.section_of_class(config), field)
        return f"{path}={inline(value)}" if path else f"{field}={short_repr(value)}"

    path = key_path(own, exc.field) or section
    f = schema.field_at(path)
    source = origin(path)
    fix = None
    if f is not None:
        fix = f.fix or fix_for(path, exc.example if exc.has_example else f.example, source)
        if f.choices:
            fix = f"one of {', '.join(f.choices)}, e.g.\n{fix_for(path, f.choices[0], source)}"
    return ConfigError(exc.problem(setting), source=source, path=path, value=_value_at(values, path),
                       has_value=path != section, fix=fix)


def construct(values: Dict[str, Any], origin: Callable[[str], str]) -> Dict[str, Any]:
    """ScalingConfig, FailureConfig, CheckpointConfig and RunConfig's keywords (torch-free)."""
    from rafter.train._config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    def build(cls, section: str, kwargs: Dict[str, Any]):
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise translate(exc, section, values, origin) from None

    scaling = build(ScalingConfig, "scaling", dict(values["scaling"]))
    failure = build(FailureConfig, "failure", dict(values["failure"]))
    checkpoint = build(CheckpointConfig, "checkpoint", dict(values["checkpoint"]))
    run = {k: v for k, v in values["run"].items() if k != "callbacks"}
    run_kwargs = dict(run, failure_config=failure, checkpoint_config=checkpoint,
                      cluster=values["cluster"], cluster_address=values["address"])
    checked = build(RunConfig, "run", dict(run_kwargs))  # fit() gets its own, with the callbacks
    run_kwargs["name"] = checked.name  # a default name is chosen once
    return {"scaling": scaling, "failure": failure, "checkpoint": checkpoint, "run_kwargs": run_kwargs}


def construct_torch(values: Dict[str, Any], origin: Callable[[str], str], scaling):
    from rafter.train._torch_config import TorchConfig, check_backend_fits

    try:
        config = TorchConfig(**values["torch"])
        check_backend_fits(config, scaling)
        return config
    except ValueError as exc:
        raise translate(exc, "torch", values, origin) from None
