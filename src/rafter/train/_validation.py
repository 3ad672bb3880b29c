"""Argument checks for the public constructors, and ``ConfigValueError``, the error they raise.

A ``ConfigValueError`` is a ``ValueError`` that knows which config object (``config``), which argument
(``field``) and which value were wrong, what was expected, and a value that would work (``example``).
``str()`` says it in Python terms::

    ScalingConfig(num_workers=0): num_workers must be a positive int, e.g. ScalingConfig(num_workers=4).

and the CLI says the same fields in job-file terms (``scaling.num_workers = 0``) without parsing the text.
``expected`` may mention other arguments as ``{placeholders}`` filled from ``refs`` (placeholder ->
``(field, value)``, or ``(config, field, value)`` for another config object's argument), so each side
writes them in its own notation.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import reprlib
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

class _NoExample:
    """The ``example`` of an error that has none (one instance, kept by pickling)."""

    def __repr__(self) -> str:
        return "NO_EXAMPLE"

    def __reduce__(self) -> str:
        return "NO_EXAMPLE"


NO_EXAMPLE = _NoExample()
NAME_MAX_BYTES = 255  # a folder name, on every filesystem rafter writes to


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 8


def short_repr(value: Any) -> str:
    """``repr(value)``, abridged with "..." past about 80 characters (a 300-character name stays readable)."""
    return _SHORT.repr(value)


def _python_setting(field: str, value: Any) -> str:
    return f"{field}={short_repr(value)}"


class ConfigValueError(ValueError):
    """A bad argument to a rafter config object or function, with the facts as fields."""

    def __init__(
        self,
        config: str,
        field: str,
        value: Any,
        expected: str,
        example: Any = NO_EXAMPLE,
        *,
        refs: Optional[Dict[str, Tuple[Any, ...]]] = None,
        text: Optional[str] = None,
    ) -> None:
        self.config = config
        self.field = field
        self.value = value
        self.expected = expected
        self.example = example
        self.refs = {k: tuple(v) if len(v) == 3 else (config, *v) for k, v in (refs or {}).items()}
        self.text = text  # the whole message, for checks whose sentence doesn't start with the call
        super().__init__(self.render())

    @property
    def has_example(self) -> bool:
        return self.example is not NO_EXAMPLE

    def _fill(self, setting: Callable[..., str]) -> str:
        if not self.refs:  # no placeholders: braces are literal text ("{'CPU': 2}")
            return self.expected
        return self.expected.format(**{k: setting(f, v, c) for k, (c, f, v) in self.refs.items()})

    def _python_ref(self, field: str, value: Any, config: Optional[str] = None) -> str:
        own = config is None or config == self.config
        return _python_setting(field, value) if own else f"{config}({_python_setting(field, value)})"

    def problem(self, setting: Optional[Callable[..., str]] = None) -> str:
        """``expected`` with its ``{refs}`` written by ``setting(field, value, config)`` (and the example)."""
        if self.text is not None:
            return self.text
        setting = setting or self._python_ref
        filled = self._fill(setting)
        if self.has_example:
            filled += f", e.g. {setting(self.field, self.example, self.config)}"
        return filled

    def render(self) -> str:
        if self.text is not None:
            return self.text

        def call(field: str, value: Any) -> str:
            return f"{self.config}({field}={short_repr(value)})"

        head = call(self.field, self.value) if self.field else f"{self.config}()"
        body = self._fill(self._python_ref)
        if self.has_example:
            body += f", e.g. {call(self.field, self.example)}"
        return f"{head}: {body}."

    def __reduce__(self):  # picklable, subclass kept (it crosses process boundaries inside errors)
        return (_rebuild, (type(self), self.config, self.field, self.value, self.expected, self.example, self.refs,
                           self.text))


def _rebuild(cls, config, field, value, expected, example, refs, text):
    return cls(config, field, value, expected, example, refs=refs, text=text)


class ConfigTypeError(ConfigValueError, TypeError):
    """An argument of the wrong type (a dict where a ``ScalingConfig`` goes, a number for a config object).

    Both a ``ValueError`` (like every rafter argument check) and a ``TypeError`` (Python's convention).
    """


class RemovedArgumentError(DeprecationWarning, TypeError):
    """A Ray Train V1 argument that V2 (and so rafter) removed; raised like Ray 2.60 raises it.

    Both a ``DeprecationWarning`` (what Ray raises) and a ``TypeError`` (what Python raises for an unknown
    keyword), so code written for either catches it.
    """


# -- checks ------------------------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_bool(config: str, field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigValueError(config, field, value, f"{field} must be True or False")


def check_choice(config: str, field: str, value: Any, choices: Iterable[Any], *, nullable: bool = False) -> None:
    choices = tuple(choices)
    if (value is None and nullable) or (isinstance(value, str) and value in choices):
        return
    shown = ", ".join(repr(c) for c in choices) + (" or None" if nullable else "")
    raise ConfigValueError(config, field, value, f"expected one of {shown}", choices[0])


def check_optional_str(config: str, field: str, value: Any, example: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
        raise ConfigValueError(config, field, value, "expected a non-empty string without NUL bytes, or None",
                               example)


def check_instance(config: str, field: str, value: Any, cls: type, example: str) -> None:
    """``value`` must be None or a ``cls`` (a config object passed where another is expected is caught here)."""
    if value is None or isinstance(value, cls):
        return
    if value is cls:
        raise ConfigTypeError(config, field, value, f"that is the class itself; pass an instance: {field}={example}")
    raise ConfigTypeError(
        config, field, value,
        f"expected a {cls.__name__} (or None), got {type(value).__name__}; pass {field}={example}",
    )


RUN_FOLDER_NAMES = frozenset({"logs", "rafter_run.json", "checkpoints.jsonl", "metrics.jsonl", "error.txt"})


def check_folder_name(config: str, field: str, value: Any, example: str) -> None:
    """A name rafter uses as one folder: non-empty, no '/', no NUL, at most 255 bytes."""
    problem = None
    if not isinstance(value, str):
        problem = f"expected a str, got {type(value).__name__}"
    elif not value or value in (".", ".."):
        problem = "expected a non-empty folder name without '/'"
    elif value != value.strip():
        problem = "the name starts or ends with white space, which makes the folder hard to name; remove it"
    elif "/" in value or "\\" in value:
        problem = "expected a non-empty folder name without '/'"
    elif any(ord(c) < 32 for c in value):
        problem = "expected a folder name without NUL bytes or other control characters"
    elif len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        problem = (f"the name is {len(value.encode('utf-8', 'surrogatepass'))} bytes long; a folder name can be at "
                   f"most {NAME_MAX_BYTES}")
    if problem:
        raise ConfigValueError(config, field, value, problem, example)


_EMPTY_STORAGE = ("an empty path would mean the current folder; name the folder (\".\" for the current one) or "
                  "leave it unset for ~/rafter_results")


def check_path(config: str, field: str, value: Any, example: str, empty: str = _EMPTY_STORAGE) -> str:
    """A local path or a URI, as a str; refuses what no filesystem can hold ("" or a NUL byte)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigValueError(config, field, value,
                               f"expected a folder path or URI as a str, got {type(value).__name__}", example)
    if not value.strip():
        raise ConfigValueError(config, field, value, empty, example)
    if "\x00" in value:
        raise ConfigValueError(config, field, value, "a path can't contain a NUL byte", example)
    return value


MIGRATION_GUIDE = "https://github.com/ray-project/ray/issues/49454"


def removed_in_v2(what: str, instead: str) -> RemovedArgumentError:
    return RemovedArgumentError(f"{what} was removed in Ray Train V2, whose API rafter follows: {instead} "
                                f"(Ray's migration guide: {MIGRATION_GUIDE}).")


def reject_removed(config: str, given: Dict[str, Any], removed: Dict[str, str],
                   unsupported: Optional[Dict[str, str]] = None) -> None:
    """Raise for the first Ray V1 argument in ``given`` that V2 removed (``removed`` maps it to what to do
    instead), or for a Ray argument rafter doesn't implement (``unsupported``)."""
    for name, instead in removed.items():
        if name in given:
            raise removed_in_v2(f"{config}({name}={short_repr(given[name])})", instead)
    for name, instead in (unsupported or {}).items():
        if name in given:
            raise RemovedArgumentError(
                f"{config}({name}={short_repr(given[name])}) is a Ray Train argument that rafter does not support: "
                f"{instead}.")


def with_removed_arguments(config: str, removed: Dict[str, str], unsupported: Optional[Dict[str, str]] = None):
    """Class decorator: ``__init__`` refuses ``removed`` (and ``unsupported``) keywords, saying what to do."""

    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)  # help() and inspect.signature still show the real arguments
        def __init__(self, *args, **kwargs):
            reject_removed(config, kwargs, removed, unsupported)
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    return decorate


def required_arguments(fn: Callable) -> Optional[List[str]]:
    """Names of ``fn``'s positional parameters without a default (None when its signature can't be read)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def takes_arguments(fn: Callable) -> Optional[bool]:
    """Whether ``fn`` can be called with one positional argument (None when its signature can't be read)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def warn_ignored(what: str, why: str, stacklevel: int = 4) -> None:
    """Warn that a setting does nothing; ``stacklevel`` 4 points at the user's call through two rafter frames."""
    warnings.warn(f"{what} is accepted for Ray compatibility but ignored: {why}", UserWarning, stacklevel=stacklevel)


def check_checkpoint_args(path: Any, filesystem: Any) -> str:
    """``Checkpoint(path, filesystem)``: the path as a str, and the filesystem it lives on (pyarrow or fsspec)."""
    path = check_path("Checkpoint", "path", path, "/path/to/checkpoint_folder",
                      empty="an empty path names no folder; give the checkpoint folder's path or URI")
    if filesystem is not None:
        from rafter._storage import as_fsspec

        try:
            as_fsspec(filesystem)
        except TypeError as exc:
            raise ConfigTypeError("Checkpoint", "filesystem", filesystem, str(exc).split(": ", 1)[1].rstrip(".")) \
                from None
    return path


def check_report_args(checkpoint_dir_name: Any) -> None:
    """``report(checkpoint_dir_name=...)``: the name of the checkpoint's folder in the run folder, or None."""
    if checkpoint_dir_name is None:
        return
    check_folder_name("rafter.train.report", "checkpoint_dir_name", checkpoint_dir_name, "checkpoint_epoch_3")
    if checkpoint_dir_name.startswith(".") or checkpoint_dir_name in RUN_FOLDER_NAMES:
        raise ConfigValueError(
            "rafter.train.report", "checkpoint_dir_name", checkpoint_dir_name,
            f"that name is one of rafter's own in the run folder ({', '.join(sorted(RUN_FOLDER_NAMES))}, and "
            f"names starting with '.'); choose another", "checkpoint_epoch_3")


def check_best_checkpoint_args(metric: Any, mode: Any) -> None:
    """``Result.get_best_checkpoint(metric, mode)``: a metric name, and "max" or "min" (not silently "min")."""
    check_optional_str("Result.get_best_checkpoint", "metric", metric, "loss")
    if metric is None:
        raise ConfigValueError("Result.get_best_checkpoint", "metric", metric, "name the metric to rank by", "loss")
    check_choice("Result.get_best_checkpoint", "mode", mode, ("max", "min"))
