"""``rafter.train.collective``: ``barrier()`` and ``broadcast_from_rank_zero(data)`` across the run's ranks.

As in Ray Train 2.60 these go through rafter's own worker-to-driver channel, not torch.distributed: they
work with any process-group backend and need no tensors. Every rank must make the same calls in the same
order; the driver answers a call once every rank has made it.
"""

from __future__ import annotations

import logging
from typing import Optional, TypeVar

from rafter._worker.session import require_session

T = TypeVar("T", bound=Optional[object])

logger = logging.getLogger("rafter")

MAX_BROADCAST_SIZE_BYTES = 1000  # Ray's limit for a warning: this is for small values (config, paths, ids)

__all__ = ["barrier", "broadcast_from_rank_zero"]


def broadcast_from_rank_zero(data: T) -> T:
    """Return rank 0's ``data`` on every rank. A barrier too: every rank waits until all have called it.

    Meant for small values (under 1 KB pickled: a path, a seed, a run id); larger ones work but log a
    warning. The value must pickle (cloudpickle) on rank 0; other ranks' ``data`` is ignored.
    """
    session = require_session("collective.broadcast_from_rank_zero")
    payload = None
    if session.spec.rank == 0:
        import cloudpickle

        try:
            payload = cloudpickle.dumps(data)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(
                f"rafter.train.collective.broadcast_from_rank_zero(data): rank 0's data of type "
                f"{type(data).__module__}.{type(data).__qualname__} can't be pickled ({exc}). Broadcast plain "
                f"values (numbers, strings, lists, dicts)."
            ) from exc
        if len(payload) > MAX_BROADCAST_SIZE_BYTES:
            logger.warning(
                "Data size %d bytes exceeds the maximum broadcast size of %d bytes "
                "(rafter.train.collective.broadcast_from_rank_zero is meant for small values; share large "
                "ones through a file in storage and broadcast its path).",
                len(payload), MAX_BROADCAST_SIZE_BYTES,
            )
    reply = _call(session, "broadcast_from_rank_zero", payload)
    if session.spec.rank == 0:
        return data
    import cloudpickle

    return cloudpickle.loads(reply)


def barrier() -> None:
    """Wait until every rank has called ``barrier()``."""
    _call(require_session("collective.barrier"), "barrier", None)


def _call(session, op: str, payload: Optional[bytes], ask_the_driver: bool = False) -> Optional[bytes]:
    """Make collective call ``op``; with one rank it needs no driver unless the driver holds the answer."""
    if session.spec.world_size == 1 and not ask_the_driver:
        return payload
    session.collective_seq += 1
    seq = session.collective_seq
    from rafter._worker import messages as msg

    reply = session.request(msg.CollectiveRequest(session.spec.rank, seq, op, payload))
    assert isinstance(reply, msg.CollectiveDone) and reply.seq == seq, (reply, seq)
    if reply.error:
        raise RuntimeError(reply.error)
    return reply.data
