"""Read a job file, merge ``--set`` flags, expand ``${VAR}``, check every key and build the config objects.

Precedence, one rule: defaults < job file < ``--set`` flags. Each value remembers where it came from
(``origins``), so an error names the file or the flag, and ``--print-config`` can say it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from rafter._cli import schema
from rafter._cli.checks import DEFAULT_ORIGIN, check_keys, check_types, origin_of
from rafter._cli.errors import ConfigError, describe_type
from rafter._cli.overrides import apply_set, expand_env
from rafter._cli.translate import construct, construct_torch
from rafter._cli.yamlread import LimitError, NotAFileError, load, read_text


@dataclass
class Job:
    """A validated job: ``values`` is the merged nested dict, ``origins`` says who set each leaf."""

    source: str
    base_dir: str
    values: Dict[str, Any]
    origins: Dict[str, str]
    configs: Dict[str, Any] = field(default_factory=dict)  # scaling, failure, checkpoint, run_kwargs, torch
    train_fn: Optional[Callable] = None
    callbacks: List[Any] = field(default_factory=list)

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def origin(self, path: str) -> str:
        return origin_of(self.origins, path, self.source)

    @property
    def scaling(self):
        return self.configs["scaling"]

    @property
    def torch_config(self):
        return self.configs["torch"]

    def run_config(self, extra_callbacks: Sequence[Any] = ()):
        from rafter.train import RunConfig

        kwargs = dict(self.configs["run_kwargs"])
        kwargs["callbacks"] = list(self.callbacks) + list(extra_callbacks)
        return RunConfig(**kwargs)

    def trainer(self, extra_callbacks: Sequence[Any] = (), run_config=None):
        from rafter.train.torch import TorchTrainer

        assert self.train_fn is not None, "load_job(load_train=True) loads the function"
        return TorchTrainer(
            self.train_fn,
            train_loop_config=self.get("train_loop_config"),
            torch_config=self.torch_config,
            scaling_config=self.scaling,
            run_config=run_config or self.run_config(extra_callbacks),
        )


# -- reading ------------------------------------------------------------------------------------
def read_file(path: str) -> Dict[str, Any]:
    fix_path = "give the path of a YAML job file, e.g. rafter run examples/quickstart.yaml"
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"no such file: {os.path.abspath(path)}", source=path, fix=fix_path) from None
    except NotAFileError as exc:
        raise ConfigError(str(exc), source=path, fix=fix_path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"can't read the file: {exc}", source=path, fix=fix_path) from None
    try:
        data = load(text)
    except LimitError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"the file can't be a job: {exc.problem} (at line {mark.line + 1})", source=path,
                          fix=exc.fix) from None
    except yaml.YAMLError as exc:
        if path.endswith(".py"):
            raise ConfigError(
                "this is a Python file; rafter run takes a YAML job file that names the train function",
                source=path, fix=f"write a job file (e.g. job.yaml) holding\ntrain: {os.path.basename(path)}:"
                                 f"<function name>\nand run: rafter run job.yaml   (or run the script: python {path})",
            ) from None
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}, {what}" if context and "twice" not in str(what) else what
        fix = (f"remove one of the two, or rename it (line {mark.line + 1})" if "twice" in str(what) and mark
               else "write the job as YAML key: value lines, nested keys indented by spaces (not tabs), "
                    "e.g.\ntrain: train.py:train_func\nscaling:\n  num_workers: 4")
        raise ConfigError(f"the file is not valid YAML{where}: {detail}", source=path, fix=fix) from None
    if data is None:
        raise ConfigError("the file is empty", source=path,
                          fix="a job needs at least the train function, e.g.\ntrain: train.py:train_func")
    if not isinstance(data, dict):
        raise ConfigError(
            f"the file holds {describe_type(data)}, but a job file is a mapping of keys "
            f"({', '.join(schema.top_level_keys())})",
            source=path, fix="train: train.py:train_func\nscaling:\n  num_workers: 4",
        )
    return data


# -- assembling -----------------------------------------------------------------------------------
def with_defaults(values: Dict[str, Any], origins: Dict[str, str]) -> Dict[str, Any]:
    merged: Dict[str, Any] = {}
    for key, f in schema.TOP.items():
        if key in values:
            merged[key] = values[key]
        elif f.default is not schema.REQUIRED:
            merged[key] = f.default
            origins.setdefault(key, DEFAULT_ORIGIN)
    for section, (_cls, fields) in schema.SECTIONS.items():
        body = dict(values.get(section) or {})
        for key, f in fields.items():
            if key not in body:
                body[key] = f.default
                origins.setdefault(f"{section}.{key}", DEFAULT_ORIGIN)
        merged[section] = body
    return merged


def _mark_file_origins(values: Dict[str, Any], origins: Dict[str, str], source: str, prefix: str = "") -> None:
    for key, value in values.items():
        path = f"{prefix}{key}"
        origins[path] = source
        if isinstance(value, dict) and (path in schema.SECTIONS or path.startswith("train_loop_config")):
            _mark_file_origins(value, origins, source, path + ".")


def load_job(path: Optional[str], sets: Sequence[str] = (), *, load_train: bool = True) -> Job:
    """The whole pipeline; raises one ``ConfigError`` for the first problem found, before anything runs."""
    source = path or "--set flags"
    if path is not None:
        raw = read_file(path)
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raw, base_dir = {}, os.getcwd()
    origins: Dict[str, str] = {}
    _mark_file_origins(raw, origins, source)
    check_keys(raw, origins, source)
    values = expand_env(raw, "", source)
    for flag in sets:
        apply_set(values, origins, flag)
    check_keys(values, origins, source)
    check_types(values, origins, source)
    merged = with_defaults(values, origins)
    job = Job(source=source, base_dir=base_dir, values=merged, origins=origins)
    job.configs = construct(merged, lambda p: origin_of(origins, p, source))
    job.configs["torch"] = construct_torch(merged, job.origin, job.scaling)
    if load_train:
        load_callable_parts(job)
    return job


def load_callable_parts(job: Job) -> None:
    """Import the train function and build the trackers."""
    from rafter._cli.loader import load_function
    from rafter._cli.trackers import build_callbacks

    job.train_fn = load_function(job.values["train"], base_dirs=[job.base_dir, os.getcwd()],
                                 source=job.origin("train"))
    job.callbacks = build_callbacks(job.values["run"].get("callbacks") or [], job.origin("run.callbacks"))
