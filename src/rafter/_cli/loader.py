"""Load the train function a job names: ``path/to/file.py:func`` or ``package.module:func``.

A file is imported under a synthetic module name (``__rafter_job__<stem>_<hash>``), so its
``if __name__ == "__main__":`` block does not run, with its folder put on ``sys.path`` so its own
imports of neighbouring modules work. The module is registered with cloudpickle to be pickled *by
value*: workers that can't import it (a Ray cluster, a fresh interpreter) still get the function.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from typing import Callable, List, Optional, Tuple

from rafter._cli.errors import ConfigError, did_you_mean

SYNTHETIC_PREFIX = "__rafter_job__"  # + "<stem>_<hash of the path>"


def split_spec(spec: str) -> Tuple[str, str]:
    """``"a/b.py:f"`` -> ``("a/b.py", "f")``. The last colon splits, so Windows drive letters survive."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(spec)
    return target, attr


def is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def load_function(spec: str, *, base_dirs: List[str], source: str) -> Callable:
    """Import the function ``spec`` names, or raise one ``ConfigError`` that says why it can't."""
    fix_form = "train: path/to/file.py:train_func   (or package.module:train_func)"
    try:
        target, attr = split_spec(spec)
    except ValueError:
        raise ConfigError(
            "expected the file or module and the function's name, separated by a colon",
            source=source, path="train", value=spec, has_value=True, fix=fix_form,
        ) from None
    if is_file_target(target):
        module = _import_file(target, spec, base_dirs, source)
    else:
        module = _import_module(target, spec, source)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            guess = did_you_mean(part, names)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise ConfigError(
                f"{target} has no attribute {part!r}. {hint}Functions defined there: "
                f"{', '.join(sorted(names)[:10]) or 'none'}",
                source=source, path="train", value=spec, has_value=True,
                fix=f"train: {target}:{guess or '<function name>'}",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"{target}:{attr} is a {type(obj).__name__}, not a function",
            source=source, path="train", value=spec, has_value=True,
            fix=f"name a function that takes (config) or (): train: {target}:<function name>",
        )
    _check_signature(obj, spec, source)
    return obj


def _check_signature(fn: Callable, spec: str, source: str) -> None:
    from rafter.train._validation import required_arguments

    required = required_arguments(fn) or []
    if len(required) > 1:
        raise ConfigError(
            f"the train function takes {len(required)} required arguments "
            f"({', '.join(required)}); rafter calls it with one (the config) or none",
            source=source, path="train", value=spec, has_value=True,
            fix="define it as def train_func(config): ... and read the other values from config",
        )


def _resolve_file(target: str, base_dirs: List[str]) -> Tuple[Optional[str], List[str]]:
    target = os.path.expanduser(target)
    if os.path.isabs(target):
        return (target if os.path.isfile(target) else None), [target]
    tried = []
    for base in base_dirs:
        candidate = os.path.abspath(os.path.join(base, target))
        if candidate in tried:
            continue
        tried.append(candidate)
        if os.path.isfile(candidate):
            return candidate, tried
    return None, tried


def _import_file(target: str, spec: str, base_dirs: List[str], source: str):
    import cloudpickle

    path, tried = _resolve_file(target, base_dirs)
    if path is None:
        raise ConfigError(
            f"the file {target} does not exist (looked for {' and '.join(tried)})",
            source=source, path="train", value=spec, has_value=True,
            fix="give the file's path relative to the job file (or the current folder), "
                "e.g. train: train.py:train_func",
        )
    stem = os.path.splitext(os.path.basename(path))[0]
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    name = f"{SYNTHETIC_PREFIX}{stem.replace('-', '_').replace('.', '_')}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{path} can't be imported as Python", source=source, path="train", value=spec,
                          has_value=True, fix="name a .py file: train: path/to/file.py:train_func")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - the user's module failed; say how
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _import_failure(exc, path, spec, source) from None
    cloudpickle.register_pickle_by_value(module)
    return module


def _import_module(target: str, spec: str, source: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as ``python -m`` would
    try:
        return importlib.import_module(target)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name and target.startswith(exc.name):
            raise ConfigError(
                f"no module named {exc.name!r} can be imported (sys.path: the current folder, then "
                f"{', '.join(p for p in sys.path[1:4] if p)}, ...)",
                source=source, path="train", value=spec, has_value=True,
                fix=f"run from the folder that holds {target.split('.')[0]}/, install the package, or "
                    f"name the file instead: train: path/to/{target.split('.')[-1]}.py:{spec.rpartition(':')[2]}",
            ) from None
        raise _import_failure(exc, target, spec, source) from None


def _import_failure(exc: BaseException, where: str, spec: str, source: str) -> ConfigError:
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename and "/rafter/_cli/" not in f.filename]
    at = f" (at {user[-1].filename}:{user[-1].lineno})" if user else ""
    if isinstance(exc, SyntaxError):
        at = f" (at {exc.filename}:{exc.lineno})"
    fix = f"fix that error in {where}: importing it must work on its own, before any training starts"
    if isinstance(exc, ModuleNotFoundError):
        fix = f"install the missing module ({exc.name}) in this environment: pip install {exc.name}"
    elif isinstance(exc, SyntaxError):
        fix = f"fix the syntax at {exc.filename}:{exc.lineno}"
    elif isinstance(exc, SystemExit):
        fix = "don't call sys.exit() at import time; put it under if __name__ == '__main__':"
    return ConfigError(
        f"importing {where} failed: {type(exc).__name__}: {exc}{at}",
        source=source, path="train", value=spec, has_value=True, fix=fix,
    )
