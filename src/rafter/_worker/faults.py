"""Named fault points for rafter's own tests (``rafter.testing.inject_fault``). Inert unless a test armed one."""

from __future__ import annotations

import ctypes
import os
import signal

from rafter._worker.session import get_session


def hit(point: str, **where) -> None:
    session = get_session()
    fault = session.spec.crash_at if session is not None else None
    if not fault or fault.get("point") != point:
        return
    spec = session.spec
    if fault.get("rank", spec.rank) != spec.rank or fault.get("attempt", spec.attempt) != spec.attempt:
        return
    for key, value in where.items():
        if key in fault and fault[key] != value:
            return
    perform(fault["action"])


def perform(action: str) -> None:
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "segfault":
        ctypes.string_at(0)
    elif action == "exit":
        os._exit(3)
    elif action == "raise":
        raise RuntimeError("fault injected by rafter.testing")
    else:
        raise ValueError(f"unknown fault action {action!r}")
