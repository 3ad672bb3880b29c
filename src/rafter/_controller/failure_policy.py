"""Whether a failed attempt is retried. A pure decision, tested without processes."""

from __future__ import annotations

from rafter.train._errors import FailureKind

# Failures that a fresh group of workers would hit again: retrying only wastes time.
_DETERMINISTIC_KINDS = {FailureKind.SERIALIZATION, FailureKind.STARTUP}


def should_retry(verdict, *, failures_so_far: int, max_failures: int) -> bool:
    """``failures_so_far`` counts the failed attempts including this one."""
    if verdict.kind in _DETERMINISTIC_KINDS:
        return False
    if max_failures == -1:
        return True
    return failures_so_far <= max_failures
