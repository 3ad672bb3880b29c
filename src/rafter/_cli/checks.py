"""Checks of a job's keys and value types against ``schema``; one ``ConfigError`` for the first problem.

Ranges and combinations are left to the config classes (see ``translate``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from rafter._cli import schema
from rafter._cli.errors import ConfigError, describe_type, did_you_mean, fix_for, inline, snippet
from rafter._cli.yamlread import LimitError, load_value

DEFAULT_ORIGIN = "default"


def origin_of(origins: Dict[str, str], path: str, fallback: str) -> str:
    """Who set ``path`` (or the nearest parent that was set): the job file or a ``--set`` flag."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        got = origins.get(".".join(parts[:n]))
        if got and got != DEFAULT_ORIGIN:
            return got
    return fallback


def unknown_key(key: str, siblings: Sequence[str], parent: str, source: str, value: Any) -> ConfigError:
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


def check_keys(values: Dict[str, Any], origins: Dict[str, str], fallback: str) -> None:
    tops = schema.top_level_keys()
    for key, value in values.items():
        if key not in tops:
            raise unknown_key(key, tops, "", origin_of(origins, str(key), fallback), value)
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
                raise unknown_key(key, tuple(fields), section, origin_of(origins, f"{section}.{key}", fallback), value)


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
    if kind == "workers":
        return _type_ok("int", value) or (isinstance(value, list) and len(value) == 2
                                          and all(_type_ok("int", v) for v in value))
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
        if isinstance(value, str) and f.kind in ("int", "number", "bool", "workers"):
            try:
                reread = load_value(value)
            except LimitError:
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
