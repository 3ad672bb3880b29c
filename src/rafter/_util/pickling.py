"""Pickling with explanations: when something can't be pickled, say *which* part and why."""

from __future__ import annotations

import contextlib
import importlib
import io
import linecache
import os
import sys
import types
from typing import Any, Iterator, List, Optional, Tuple

import cloudpickle

_MAX_DEPTH = 10


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus:

    - module objects of a ModuleType *subclass* (torch's config modules, lazy modules) travel by name
      like plain modules instead of failing to pickle;
    - code shipped by value (scripts, job files, notebook cells) keeps its file name, and its source
      travels with it, so a traceback in a worker shows ``File "train.py", line 7`` and the line itself
      (cloudpickle 3.1 renames every such code object ``<dynamic-code>``)."""

    def reducer_override(self, obj):
        if isinstance(obj, types.ModuleType) and type(obj) is not types.ModuleType:
            name = getattr(obj, "__name__", None)
            if name and sys.modules.get(name) is obj:
                return importlib.import_module, (name,)
        if isinstance(obj, types.CodeType):
            return _code_reduce(obj)
        return super().reducer_override(obj)


def _code_reduce(code: types.CodeType):
    make, args = cloudpickle.cloudpickle._code_reduce(code)
    args = list(args)
    args[args.index("<dynamic-code>")] = code.co_filename
    # The same list object for every code object of a file: pickle's memo sends it once.
    lines = linecache.getlines(code.co_filename)
    return _code_with_source, (tuple(args), code.co_filename, lines)


def _code_with_source(args: tuple, filename: str, lines: List[str]) -> types.CodeType:
    """Rebuild a code object and make its source readable to ``linecache`` (tracebacks, stack dumps),
    unless this machine has the file itself. Runs when a payload is unpickled in a worker."""
    if lines and filename not in linecache.cache and not os.path.exists(filename):
        # mtime None: linecache.checkcache keeps the entry (there is no file to compare with).
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    return types.CodeType(*args)


def dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
    return buf.getvalue()

def try_cloudpickle(obj: Any) -> Optional[bytes]:
    try:
        return dumps(obj)
    except Exception:  # noqa: BLE001 - any failure means "not picklable"
        return None


def _type_name(obj: Any) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _pickle_error(obj: Any) -> Optional[BaseException]:
    try:
        dumps(obj)
        return None
    except Exception as exc:  # noqa: BLE001
        return exc


def _children(obj: Any, path: str) -> Iterator[Tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}[{key!r}]", value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            yield f"{path}[{i}]", value
    elif isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                yield f"{path}.<closure {name}>", cell.cell_contents
            except ValueError:
                continue
        for name in _global_names(code):
            if name in obj.__globals__:
                value = obj.__globals__[name]
                if not isinstance(value, types.ModuleType):
                    yield f"{path}.<global {name}>", value
    elif isinstance(obj, types.MethodType):
        yield f"{path}.__self__", obj.__self__
    else:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            for key, value in state.items():
                yield f"{path}.{key}", value
        for slot in getattr(type(obj), "__slots__", ()) or ():
            if isinstance(slot, str) and hasattr(obj, slot):
                yield f"{path}.{slot}", getattr(obj, slot)


def _global_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


def find_unpicklable(obj: Any, root: str) -> List[Tuple[str, str, str]]:
    """Paths to the innermost parts of ``obj`` that can't be pickled: ``[(path, type, error)]``."""
    found: List[Tuple[str, str, str]] = []
    seen: set = set()

    def walk(value: Any, path: str, depth: int) -> bool:
        error = _pickle_error(value)
        if error is None:
            return False
        if id(value) in seen:
            return True
        seen.add(id(value))
        deeper = False
        if depth < _MAX_DEPTH:
            for child_path, child in _children(value, path):
                deeper = walk(child, child_path, depth + 1) or deeper
        if not deeper:
            found.append((path, _type_name(value), f"{type(error).__name__}: {error}"))
        return True

    walk(obj, root, 0)
    return found


class SerializationError(TypeError):
    """Something rafter must send between processes can't be pickled.

    The first line names the first part that can't be pickled and its type; every part follows."""

    def __init__(self, what: str, problems: List[Tuple[str, str, str]], fix: str,
                 destination: str = "the workers") -> None:
        if problems:
            path, type_name, _ = problems[0]
            more = f" (and {len(problems) - 1} more, below)" if len(problems) > 1 else ""
            lines = [f"{path} ({type_name}) can't be pickled{more}, so rafter can't send {what} to "
                     f"{destination}:"]
        else:
            lines = [f"{what} can't be pickled, so rafter can't send it to {destination}:"]
        for path, type_name, error in problems:
            lines.append(f"  {path}: {type_name}  ({error})")
        lines.append(f"Fix: {fix}")
        super().__init__("\n".join(lines))
        self.problems = problems

    def __reduce__(self):
        return (_rebuild_serialization_error, (str(self), self.problems))


def _rebuild_serialization_error(message: str, problems) -> "SerializationError":
    err = SerializationError.__new__(SerializationError)
    TypeError.__init__(err, message)
    err.problems = problems
    return err


def _importable(module_name: str, path: List[str]) -> bool:
    """Would a fresh interpreter with this ``sys.path`` find the module's top-level package?"""
    import importlib.machinery
    import os

    top = module_name.partition(".")[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return True
    entries = [p if p else os.getcwd() for p in path]
    return importlib.machinery.PathFinder.find_spec(top, entries) is not None


def _modules_to_ship_by_value(fn: Any) -> List[types.ModuleType]:
    """The train function's module, when workers could not import it by name (it was loaded from a file
    outside sys.path, or sys.path changed since): such a module travels by value, like ``__main__``."""
    name = getattr(fn, "__module__", None)
    module = sys.modules.get(name) if name else None
    if module is None or name == "__main__" or not getattr(module, "__file__", None):
        return []
    return [] if _importable(name, sys.path) else [module]


@contextlib.contextmanager
def _by_value(modules: List[types.ModuleType]):
    """Pickle these modules' functions by value for the duration (leaving earlier registrations alone)."""
    already = cloudpickle.list_registry_pickle_by_value()
    added = [m for m in modules if m.__name__ not in already]
    for module in added:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)


def dumps_payload(fn: Any, config: Any) -> bytes:
    """Pickle the train function and its config, or explain exactly what can't be pickled."""
    with _by_value(_modules_to_ship_by_value(fn)):
        try:
            return dumps((fn, config))
        except Exception:  # noqa: BLE001
            pass
        problems = find_unpicklable(config, "train_loop_config") + find_unpicklable(fn, "train_loop_per_worker")
        if not problems:  # pickles separately but not together: report the pair
            problems = find_unpicklable((fn, config), "(train_loop_per_worker, train_loop_config)")
    raise SerializationError(
        "the train function and its train_loop_config",
        problems,
        "create these objects inside the train function (open files, locks, generators, "
        "loaders and clients there), and pass only plain data (paths, numbers, strings) in train_loop_config.",
    )


def dumps_return_value(value: Any) -> bytes:
    try:
        return dumps(value)
    except Exception:  # noqa: BLE001
        raise SerializationError(
            "the train function's return value",
            find_unpicklable(value, "return_value"),
            "return plain data (numbers, strings, CPU tensors, state dicts) from the train function.",
            destination="the driver",
        ) from None
