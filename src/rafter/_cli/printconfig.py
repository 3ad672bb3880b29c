"""``rafter run --print-config``: the merged job as YAML, each value commented with who set it.

The output is itself a valid job file (comments aside, it is what ``rafter run`` would use).
"""

from __future__ import annotations

from typing import Any, Dict, List

from rafter._cli import schema
from rafter._cli.errors import inline
from rafter._cli.jobfile import DEFAULT_ORIGIN, Job

PRECEDENCE = "defaults < job file < --set flags"
_COLUMN = 44


def _comment(job: Job, path: str, value: Any) -> str:
    origin = job.origins.get(path, DEFAULT_ORIGIN)
    if origin == DEFAULT_ORIGIN:
        f = schema.field_at(path)
        return f"default; {f.doc}" if f is not None and value is None else "default"
    return "job file" if origin == job.source else origin


def _emit(lines: List[str], job: Job, key: str, value: Any, path: str, depth: int, nested: bool) -> None:
    indent = "  " * depth
    if nested and isinstance(value, dict) and value:
        lines.append(f"{indent}{key}:")
        for child_key, child in value.items():
            _emit(lines, job, child_key, child, f"{path}.{child_key}", depth + 1,
                  nested=path.startswith("train_loop_config"))
        return
    text = f"{indent}{key}: {inline(value)}"
    lines.append(f"{text.ljust(_COLUMN)}  # {_comment(job, path, value)}")


def render(job: Job) -> str:
    lines = [
        f"# rafter job from {job.source}",
        f"# precedence: {PRECEDENCE}; each comment says which one set the value",
    ]
    values: Dict[str, Any] = job.values
    for key in schema.TOP:
        if key in values:
            _emit(lines, job, key, values[key], key, 0, nested=key == "train_loop_config")
    for section in schema.SECTIONS:
        lines.append(f"{section}:")
        for key, value in values[section].items():
            _emit(lines, job, key, value, f"{section}.{key}", 1, nested=False)
    return "\n".join(lines) + "\n"
