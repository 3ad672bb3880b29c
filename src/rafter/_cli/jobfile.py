"""Read a job file, merge ``--set`` flags, expand ``${VAR}``, check every key and build the config objects.

Precedence, one rule: defaults < job file < ``--set`` flags. Each value remembers where it came from
(``origins``), so an error names the file or the flag, and ``--print-config`` can say it too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from rafter._cli import schema
from rafter._cli.errors import ConfigError, describe_type, did_you_mean, fix_for, inline, snippet
from rafter._cli.translate import construct

DEFAULT_ORIGIN = "default"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice (first at line {seen[key] + 1})", key_node.start_mark
                )
            try:
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key; SafeLoader reports it itself
                break
        return super().construct_mapping(node, deep=deep)


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


def origin_of(origins: Dict[str, str], path: str, fallback: str) -> str:
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        got = origins.get(".".join(parts[:n]))
        if got and got != DEFAULT_ORIGIN:
            return got
    return fallback


# -- reading ------------------------------------------------------------------------------------
def read_file(path: str) -> Dict[str, Any]:
    fix_path = "give the path of a YAML job file, e.g. rafter run examples/quickstart.yaml"
    if not os.path.exists(path):
        raise ConfigError(f"no such file: {os.path.abspath(path)}", source=path, fix=fix_path)
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder, not a job file", source=path, fix=fix_path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"can't read the file: {exc}", source=path, fix=fix_path) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
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


# -- ${VAR} expansion -----------------------------------------------------------------------------
_ENV = re.compile(r"\$\$(?=\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def _typed(path: str) -> bool:
    """Whether a value that is exactly one ``${VAR}`` should become an int/float/bool, as YAML reads it."""
    f = schema.field_at(path)
    if f is None:
        return True  # inside train_loop_config or resources_per_worker
    return f.kind not in ("str", "callbacks")


def expand_env(value: Any, path: str, source: str) -> Any:
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3)
        got = os.environ.get(name)
        if op == ":-" and not got:
            return default or ""
        if op == "-" and got is None:
            return default or ""
        if got is None:
            raise ConfigError(
                f"the environment variable {name} is not set (the value references ${{{name}}})",
                source=source, path=path, value=value, has_value=True,
                fix=f"export {name}=...  before running, or give a default: ${{{name}:-<value>}}",
            )
        return got

    whole = _ENV.fullmatch(value) is not None and value != "$$"
    result = _ENV.sub(replace, value)
    if whole and _typed(path.split("[")[0]):
        try:
            loaded = yaml.safe_load(result) if result.strip() else None
        except yaml.YAMLError:
            return result
        if loaded is None or isinstance(loaded, (bool, int, float)):
            return loaded
    return result


# -- --set flags ----------------------------------------------------------------------------------
def parse_set(flag: str) -> Tuple[str, Any]:
    key, sep, raw = flag.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            "a --set flag is KEY=VALUE, with the key's dotted path",
            source=f"--set {flag}", fix="--set scaling.num_workers=8",
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _unknown_key(key: str, siblings: Sequence[str], parent: str, source: str, value: Any) -> ConfigError:
    path = f"{parent}.{key}" if parent else str(key)
    guess = schema.ALIASES.get(str(key)) if not parent else None
    elsewhere = [p for p, _f in schema.leaves() if p.rsplit(".", 1)[-1] == key and p != path]
    if guess is None:
        guess = did_you_mean(key, siblings)
        if guess is None and elsewhere:
            guess_path = elsewhere[0]
        else:
            guess_path = f"{parent}.{guess}" if (guess and parent) else guess
    else:
        guess_path = guess
    where = f"under {parent}" if parent else "at the top level"
    problem = f"unknown key {key!r} {where}"
    if guess_path:
        problem += f"; did you mean {guess_path}?"
    problem += f" Known keys {where}: {', '.join(siblings)}"
    fix = fix_for(guess_path, value, source) if guess_path and not isinstance(value, dict) else (
        f"rename it to {guess_path}" if guess_path else f"remove it, or use one of: {', '.join(siblings)}")
    return ConfigError(problem, source=source, path=path, fix=fix)


def apply_set(values: Dict[str, Any], origins: Dict[str, str], flag: str) -> None:
    path, value = parse_set(flag)
    source = f"--set {flag}"
    parts = path.split(".")
    top = parts[0]
    if top not in schema.top_level_keys():
        raise _unknown_key(top, schema.top_level_keys(), "", source, value)
    if top in schema.SECTIONS:
        fields = schema.SECTIONS[top][1]
        if len(parts) == 1:
            raise ConfigError(f"{top} is a section; set one of its keys", source=source, path=top,
                              fix=f"--set {top}.{next(iter(fields))}={inline(fields[next(iter(fields))].example)}")
        if parts[1] not in fields:
            raise _unknown_key(parts[1], tuple(fields), top, source, value)
        if len(parts) > 2 and fields[parts[1]].kind != "resources":
            raise ConfigError(f"{top}.{parts[1]} has no sub-keys", source=source, path=path,
                              fix=f"--set {top}.{parts[1]}={inline(fields[parts[1]].example)}")
    elif len(parts) > 1 and schema.TOP[top].kind != "mapping":
        raise ConfigError(f"{top} has no sub-keys", source=source, path=path,
                          fix=f"--set {top}={inline(schema.TOP[top].example)}")
    value = expand_env(value, path, source)
    node = values
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(
                f"{'.'.join(parts[:i + 1])} is {describe_type(child)}, so it has no key {parts[i + 1]!r}",
                source=source, path=".".join(parts[: i + 1]), value=child, has_value=True,
                fix=f"--set {'.'.join(parts[:i + 1])}={inline({parts[i + 1]: value})}",
            )
        node = child
    node[parts[-1]] = value
    for key in [k for k in origins if k == path or k.startswith(path + ".")]:
        del origins[key]
    origins[path] = source


# -- checks ---------------------------------------------------------------------------------------
def check_keys(values: Dict[str, Any], origins: Dict[str, str], fallback: str) -> None:
    tops = schema.top_level_keys()
    for key, value in values.items():
        if key not in tops:
            raise _unknown_key(key, tops, "", origin_of(origins, str(key), fallback), value)
    for section, (_cls, fields) in schema.SECTIONS.items():
        body = values.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            first = next(iter(fields))
            raise ConfigError(
                f"{section} must be a mapping of its keys ({', '.join(fields)}), not {describe_type(body)}",
                source=origin_of(origins, section, fallback), path=section, value=body, has_value=True,
                fix=snippet(f"{section}.{first}", fields[first].example),
            )
        for key, value in body.items():
            if key not in fields:
                raise _unknown_key(key, tuple(fields), section, origin_of(origins, f"{section}.{key}", fallback), value)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind in ("mapping", "resources"):
        return isinstance(value, dict)
    if kind == "callbacks":
        return isinstance(value, list)
    raise AssertionError(kind)


def check_value(path: str, f: schema.Field, value: Any, source: str) -> None:
    def error(problem: str, fix: Optional[str] = None) -> ConfigError:
        return ConfigError(problem, source=source, path=path, value=value, has_value=True,
                           fix=fix or f.fix or fix_for(path, f.example, source))

    if value is None:
        if f.nullable:
            return
        raise error("this key can't be empty (null)", f"give a value, e.g.\n{fix_for(path, f.example, source)}"
                    + ("" if f.default is schema.REQUIRED else f"\nor remove the key to get the default, "
                       f"{inline(f.default)}"))
    if not _type_ok(f.kind, value):
        hint = ""
        if isinstance(value, str) and f.kind in ("int", "number", "bool"):
            try:
                reread = yaml.safe_load(value)
            except yaml.YAMLError:
                reread = None
            if _type_ok(f.kind, reread):
                hint = " (it is quoted; remove the quotes)"
        raise error(f"expected {schema.KIND_NAMES[f.kind]}, got {describe_type(value)}{hint}")
    if f.choices and value not in f.choices:
        guess = did_you_mean(value, f.choices) or next((c for c in f.choices if c.lower() == str(value).lower()), None)
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise error(f"expected one of {', '.join(f.choices)}{hint}", fix_for(path, guess or f.choices[0], source))
    if f.kind == "resources":
        for name, amount in value.items():
            if not isinstance(name, str) or not name:
                raise error(f"resource name {name!r} must be a non-empty string such as CPU, GPU or memory")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise ConfigError(
                    f"expected a number for the amount of {name}, got {describe_type(amount)}",
                    source=source, path=f"{path}.{name}", value=amount, has_value=True,
                    fix=fix_for(f"{path}.{name}", 2 if name != "memory" else 8 * 2**30, source),
                )


def check_types(values: Dict[str, Any], origins: Dict[str, str], fallback: str) -> None:
    for path, f in schema.leaves():
        section, _, key = path.partition(".")
        if key:
            body = values.get(section) or {}
            if key not in body:
                continue
            value = body[key]
        else:
            if path not in values:
                if f.default is schema.REQUIRED:
                    raise ConfigError(
                        f"the job has no {path!r} key; it names the function each worker runs",
                        source=fallback, path=path, fix=snippet(path, f.example)
                        + "\n(a path relative to the job file, or package.module:function)",
                    )
                continue
            value = values[path]
        check_value(path, f, value, origin_of(origins, path, fallback))


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
    if load_train:
        load_callable_parts(job)
    return job


def load_callable_parts(job: Job) -> None:
    """Import the train function, build TorchConfig (imports torch) and the trackers."""
    from rafter._cli.loader import load_function
    from rafter._cli.trackers import build_callbacks
    from rafter._cli.translate import construct_torch

    job.train_fn = load_function(job.values["train"], base_dirs=[job.base_dir, os.getcwd()],
                                 source=job.origin("train"))
    job.configs["torch"] = construct_torch(job.values, job.origin)
    job.callbacks = build_callbacks(job.values["run"].get("callbacks") or [], job.origin("run.callbacks"))
