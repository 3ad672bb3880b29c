"""``ConfigError``: one problem with a job, said as where (file and key path), what (the value) and the fix."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional

import yaml

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped from outside (SIGTERM, a first Ctrl-C); run the same job again to resume


class ConfigError(Exception):
    """A job file or ``--set`` flag that rafter can't run. ``str()`` is the whole message for the user."""

    def __init__(
        self,
        problem: str,
        *,
        source: Optional[str] = None,
        path: Optional[str] = None,
        value: Any = None,
        has_value: bool = False,
        fix: Optional[str] = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.path = path
        self.value = value
        self.has_value = has_value
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = self.source or "the job"
        head = f"invalid job: {where}"
        if self.path:
            head += f", key {self.path}"
            if self.has_value:
                head += f" = {inline(self.value)}"
        lines = [head, f"  problem: {self.problem}"]
        if self.fix:
            fix_lines = self.fix.splitlines()
            lines.append(f"  fix: {fix_lines[0]}")
            lines.extend(f"       {line}" for line in fix_lines[1:])
        return "\n".join(lines)


def inline(value: Any) -> str:
    """A value as it would be written in YAML, on one line (``{CPU: 2}``, ``true``, ``null``)."""
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    except yaml.YAMLError:
        return repr(value)
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.replace("\n...", "").strip()


def snippet(path: str, value: Any) -> str:
    """The YAML a user would write to set ``path`` (dotted) to ``value``."""
    parts = path.split(".")
    lines = []
    for depth, part in enumerate(parts[:-1]):
        lines.append("  " * depth + f"{part}:")
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {inline(value)}")
    return "\n".join(lines)


def fix_for(path: str, value: Any, source: Optional[str]) -> str:
    """The fix as the user would write it where the bad value came from: a ``--set`` flag or the file."""
    if source and source.startswith("--set"):
        return f"--set {path}={inline(value)}"
    return snippet(path, value)


def did_you_mean(word: str, candidates: Iterable[str]) -> Optional[str]:
    matches = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def describe_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {inline(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
