"""Copies that only the driver can make: storage that other processes can't see (fsspec ``memory://``)."""

from __future__ import annotations

from typing import Any


def copy_via_driver(session, op: str, source: str, dest: str) -> Any:
    """Have the driver ``upload`` (returns the manifest) or ``download`` files; waits for its answer."""
    _kind, value, error = session.request(("storage", op, source, dest))
    if error:
        raise RuntimeError(f"rafter could not {op} checkpoint files ({source} -> {dest}): {error}")
    return value
