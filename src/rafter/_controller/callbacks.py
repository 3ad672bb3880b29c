"""Calling the user's callbacks: one place, called by the controller only (never from persistence)."""

from __future__ import annotations

from typing import Any, Iterable


def notify(callbacks: Iterable[Any], hook: str, **kwargs: Any) -> None:
    """Call ``hook(**kwargs)`` on every callback that defines it, in order."""
    for cb in callbacks or ():
        method = getattr(cb, hook, None)
        if method is not None:
            method(**kwargs)


def notify_committed(callbacks: Iterable[Any], state, committed) -> None:
    """``on_checkpoint`` for each checkpoint ``state`` just committed (what its methods return)."""
    for entry in committed:
        notify(callbacks, "on_checkpoint", checkpoint=state.checkpoint(entry), metrics=entry["metrics"],
               run_path=state.run_path)


def notify_report(callbacks: Iterable[Any], state, event, committed) -> None:
    """After ``state.on_report(event)``: ``after_report`` for rank 0's report, then ``on_checkpoint`` for
    each checkpoint it completed."""
    if event.rank == 0:
        notify(callbacks, "after_report", metrics=event.metrics, rank=0, run_path=state.run_path)
    notify_committed(callbacks, state, committed)
