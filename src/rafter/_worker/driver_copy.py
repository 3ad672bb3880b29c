"""Copies that only the driver can make: storage that other processes can't see (fsspec ``memory://``)."""

from __future__ import annotations

from typing import Any

from rafter._worker import messages as msg


def copy_via_driver(session, op: str, source: str, dest: str) -> Any:
    """Have the driver ``upload`` (returns the manifest) or ``download`` files; waits for its answer."""
    reply = session.request(msg.StorageRequest(session.spec.rank, op, source, dest))
    assert isinstance(reply, msg.StorageDone), reply
    if reply.error:
        raise RuntimeError(f"rafter could not {op} checkpoint files ({source} -> {dest}): {reply.error}")
    return reply.value
