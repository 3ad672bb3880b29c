"""Build the config objects from a job's values, re-saying their ``ValueError`` in job-file terms.

The classes check ranges and combinations (``ScalingConfig(num_workers=0): ...``); this module
turns such a message into the key path, the value and the fix in the notation of the job file and
``--set`` (``scaling.num_workers=4``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional

from rafter._cli import schema
from rafter._cli.errors import ConfigError, fix_for, python_literal_to_yaml

# RunConfig's keyword -> the job file's top-level key, for the two that live at the top.
_RUN_TOP = {"cluster": "cluster", "cluster_address": "address"}
_HEAD = re.compile(r"^(\w+)\((\w+)")


def _skip_call(message: str) -> str:
    """``"ScalingConfig(x={'a': 1}) with y: z"`` -> ``"with y: z"`` (balanced parentheses)."""
    start = message.find("(")
    depth = 0
    for i in range(start, len(message)):
        if message[i] == "(":
            depth += 1
        elif message[i] == ")":
            depth -= 1
            if depth == 0:
                return message[i + 1:].lstrip(":").strip()
    return message


def _key_path(section: str, attr: str) -> Optional[str]:
    if attr in schema.SECTIONS[section][1]:
        return f"{section}.{attr}"
    if section == "run" and attr in _RUN_TOP:
        return _RUN_TOP[attr]
    return None


def _say_in_job_terms(text: str, section: str) -> str:
    """``ScalingConfig(num_workers=4)`` and ``use_gpu=True`` -> ``scaling.num_workers=4``, ``scaling.use_gpu=true``."""

    def call(m: re.Match) -> str:
        sec = schema.section_of_class(m.group(1))
        path = _key_path(sec, m.group(2)) if sec else None
        return f"{path}={python_literal_to_yaml(m.group(3))}" if path else m.group(0)

    text = re.sub(r"\b(\w+Config)\((\w+)=([^()]*?)\)", call, text)
    keys = list(schema.SECTIONS[section][1]) + (list(_RUN_TOP) if section == "run" else [])

    def bare(m: re.Match) -> str:
        path = _key_path(section, m.group(1))
        return f"{path}={python_literal_to_yaml(m.group(2))}" if path else m.group(0)

    if keys:
        text = re.sub(r"(?<![\w.])(" + "|".join(map(re.escape, keys)) + r")=([^\s,;:]+?)(?=[\s,;:]|$)", bare, text)
    return text


def translate(exc: ValueError, section: str, values: Dict[str, Any], origin: Callable[[str], str]) -> ConfigError:
    message = str(exc)
    m = _HEAD.match(message)
    path = None
    if m and schema.section_of_class(m.group(1)) == section:
        path = _key_path(section, m.group(2))
    path = path or section
    node: Any = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    problem = _say_in_job_terms(_skip_call(message) if m else message, section)
    f = schema.field_at(path)
    source = origin(path)
    fix = None
    if f is not None:
        fix = f.fix or fix_for(path, f.example, source)
        if f.choices:
            fix = f"one of {', '.join(f.choices)}, e.g.\n{fix_for(path, f.choices[0], source)}"
    return ConfigError(problem, source=source, path=path, value=node, has_value=path != section, fix=fix)


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


def construct_torch(values: Dict[str, Any], origin: Callable[[str], str]):
    from rafter.train.torch import TorchConfig

    try:
        return TorchConfig(**values["torch"])
    except ValueError as exc:
        raise translate(exc, "torch", values, origin) from None
