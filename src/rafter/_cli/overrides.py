"""Values from outside the file: ``${VAR}`` / ``${VAR:-default}`` expansion and ``--set key=value`` flags."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional, Tuple

from rafter._cli import schema
from rafter._cli.checks import unknown_key
from rafter._cli.errors import ConfigError, describe_type, inline
from rafter._cli.yamlread import MAX_DEPTH, LimitError, load_value

_ENV = re.compile(r"\$\$(?=\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def _typed(path: str) -> bool:
    """Whether a value that is exactly one ``${VAR}`` should become an int/float/bool, as YAML reads it."""
    f = schema.field_at(path)
    if f is None:
        return True  # inside train_loop_config or resources_per_worker
    return f.kind not in ("str", "callbacks")


def expand_env(value: Any, path: str, source: str, _done: Optional[Dict[int, Any]] = None) -> Any:
    """``value`` with ``${VAR}`` references replaced. A mapping or list that YAML aliases share is expanded
    once and shared in the result too, so the work follows the file's size, not its expanded size."""
    if isinstance(value, (dict, list)):
        done = {} if _done is None else _done
        # Below the schema's keys (inside train_loop_config's values) the result doesn't depend on the path.
        shared = "." in path and schema.field_at(path.split("[")[0]) is None
        if shared and id(value) in done:
            return done[id(value)]
        if isinstance(value, dict):
            out: Any = {k: expand_env(v, f"{path}.{k}" if path else str(k), source, done) for k, v in value.items()}
        else:
            out = [expand_env(v, f"{path}[{i}]", source, done) for i, v in enumerate(value)]
        if shared:
            done[id(value)] = out
        return out
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
            loaded = load_value(result)
        except LimitError:
            return result
        if loaded is None or isinstance(loaded, (bool, int, float)):
            return loaded
    return result


def parse_set(flag: str) -> Tuple[str, Any]:
    key, sep, raw = flag.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            "a --set flag is KEY=VALUE, with the key's dotted path",
            source=f"--set {flag}", fix="--set scaling.num_workers=8",
        )
    try:
        value = load_value(raw)
    except LimitError as exc:
        raise ConfigError(f"the value can't be read: {exc.problem}", source=f"--set {flag}",
                          fix="give a plain value, e.g. --set scaling.num_workers=8") from None
    return key, value


def apply_set(values: Dict[str, Any], origins: Dict[str, str], flag: str) -> None:
    path, value = parse_set(flag)
    source = f"--set {flag}"
    parts = path.split(".")
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"the key path has {len(parts)} levels; a job nests at most {MAX_DEPTH}", source=source,
                          fix="set a shorter path, e.g. --set train_loop_config.lr=0.01")
    top = parts[0]
    if top not in schema.top_level_keys():
        raise unknown_key(top, schema.top_level_keys(), "", source, value)
    if top in schema.SECTIONS:
        fields = schema.SECTIONS[top][1]
        if len(parts) == 1:
            raise ConfigError(f"{top} is a section; set one of its keys", source=source, path=top,
                              fix=f"--set {top}.{next(iter(fields))}={inline(fields[next(iter(fields))].example)}")
        if parts[1] not in fields:
            raise unknown_key(parts[1], tuple(fields), top, source, value)
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
        else:
            child = node[part] = dict(child)  # a mapping YAML aliases share: change this copy only
        node = child
    node[parts[-1]] = value
    for key in [k for k in origins if k == path or k.startswith(path + ".")]:
        del origins[key]
    origins[path] = source
