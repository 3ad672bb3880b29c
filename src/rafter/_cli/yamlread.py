"""Reading YAML from job files and ``--set`` flags, safely and with bounds.

- Only a regular file is opened (a named pipe, ``/dev/zero`` or a socket is refused without reading), and
  at most ``MAX_FILE_BYTES`` of it.
- ``yaml.SafeLoader`` with these changes: numbers are read as in YAML 1.2, so ``1e-3`` is a float (PyYAML,
  following YAML 1.1, reads it as a string), ``010`` is 10 (not octal 8) and ``1:30`` is a string (not
  the base-60 number 90); a key given twice in one mapping is an error; and the document
  may hold at most ``MAX_VALUES`` values once aliases are expanded and nest at most ``MAX_DEPTH`` deep,
  so a "billion laughs" file of nested aliases is refused after composing a few dozen nodes instead of
  being walked 10^9 times by the checks and ``${VAR}`` expansion that follow.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any, List

import yaml

MAX_FILE_BYTES = 1 << 20  # a job file is a few hundred bytes; large data belongs in files the job reads
MAX_VALUES = 250_000  # values in the document, counting an alias as a copy of what it names
MAX_DEPTH = 64  # levels of nested mappings and lists, aliases expanded

# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot or a sign, e.g. 1e-3, 5E4.
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class LimitError(yaml.MarkedYAMLError):
    """Valid YAML that is too big or too deep to be a job (see the module docstring); ``fix`` says what to do."""

    def __init__(self, problem: str, mark, fix: str) -> None:
        super().__init__(None, None, problem, mark)
        self.fix = fix


_TOO_BIG = ("write the values out instead of repeating aliases; put large data in a file the train function "
            "reads, and pass its path in train_loop_config")
_TOO_DEEP = "flatten the structure: a job needs a few levels (section, key, value)"


class NotAFileError(OSError):
    """The path names something other than a regular file, or a file over the size limit."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_text(path: str) -> str:
    """The file's text, refusing (``NotAFileError``) special files and files over ``MAX_FILE_BYTES``.

    The file is opened non-blocking and checked again through its descriptor, so a pipe swapped in
    after the first check can't block the read.
    """
    mode = os.stat(path).st_mode  # FileNotFoundError, PermissionError: the caller says them
    if not stat.S_ISREG(mode):
        raise NotAFileError(f"{path} is {_kind(mode)}, not a job file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotAFileError(f"{path} is {_kind(info.st_mode)}, not a job file")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES or info.st_size > MAX_FILE_BYTES:
        raise NotAFileError(
            f"{path} is {max(info.st_size, len(data))} bytes; a job file can be at most {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8-sig")


def _children(node: yaml.Node) -> List[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expanded_size(root: yaml.Node) -> None:
    """Count values and depth with each alias expanded, visiting each node once (memoised, no recursion)."""
    sizes, depths, open_ = {}, {}, set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            kids = _children(node)
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            depths[key] = 1 + max((depths[id(k)] for k in kids), default=0)
            if sizes[key] > MAX_VALUES:
                raise LimitError(f"the document holds more than {MAX_VALUES} values once its aliases "
                                 f"(*name) are expanded", node.start_mark, _TOO_BIG)
            if depths[key] > MAX_DEPTH:
                raise LimitError(f"mappings and lists are nested more than {MAX_DEPTH} levels deep "
                                 f"(aliases expanded)", node.start_mark, _TOO_DEEP)
            continue
        if key in sizes:
            continue
        open_.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in open_:
                raise LimitError("an alias refers to a mapping or list that contains it, which would never "
                                 "end", kid.start_mark, "write the value out instead of the alias")
            if id(kid) not in sizes:
                stack.append((kid, False))


class JobLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 exponent floats, unique keys, and the size and depth bounds."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise LimitError(f"mappings and lists are nested more than {MAX_DEPTH} levels deep",
                                 self.peek_event().start_mark, _TOO_DEEP)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice (first at line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key; SafeLoader reports it itself
                break
        return super().construct_mapping(node, deep=deep)


    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if ":" in text:  # YAML 1.1 base 60 (1:30 is 90); YAML 1.2 and people read a string
            return text
        digits = text.replace("_", "")
        if _LEADING_ZERO.match(digits):  # YAML 1.1 octal (010 is 8); YAML 1.2 and people read 10
            return int(digits, 10)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        text = self.construct_scalar(node)
        return text if ":" in text else super().construct_yaml_float(node)


JobLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
JobLoader.add_constructor("tag:yaml.org,2002:int", JobLoader.construct_yaml_int)
JobLoader.add_constructor("tag:yaml.org,2002:float", JobLoader.construct_yaml_float)


def load(text: str) -> Any:
    """Parse one YAML document with ``JobLoader`` (raises ``yaml.YAMLError``, ``LimitError`` among them)."""
    return yaml.load(text, Loader=JobLoader)  # noqa: S506 - a SafeLoader subclass


def load_value(text: str) -> Any:
    """A ``--set`` value or an expanded ``${VAR}``: YAML when it parses, else the text itself.

    ``LimitError`` is raised, not swallowed: a value too big to be YAML must not become a string quietly.
    """
    try:
        return load(text) if text.strip() else None
    except LimitError:
        raise
    except yaml.YAMLError:
        return text
