"""The driver's half of ``rafter.train.collective``: answer a call once every rank has made it.

One per attempt, fed the group's events like the other attempt monitors. It relays rank 0's pickled
bytes without unpickling them (the driver may not have the user's modules). A rank that returns from
its train function while others wait in a call it will never make would leave them hanging; they get
an error naming that rank instead.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from rafter._backends import events as ev
from rafter._worker import messages as msg

_API = "rafter.train.collective"


class CollectiveHub:
    """A service more than a monitor: it answers the ranks (``group.send``) and never asks for a stop."""

    def __init__(self, view) -> None:
        self._group = view.group
        self._answers = view.answers  # ops the driver answers itself (get_preemption_info)
        self._ranks = list(view.group.ranks)
        self._pending: Dict[int, Dict[int, Tuple[str, Optional[bytes]]]] = {}
        self._finished: Dict[int, int] = {}  # rank -> number of collective calls it made before returning
        self._calls: Dict[int, int] = {}

    def tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        self._pending.clear()

    def on_event(self, event) -> None:
        if isinstance(event, ev.CollectiveRequest):
            self._calls[event.rank] = max(self._calls.get(event.rank, 0), event.seq)
            calls = self._pending.setdefault(event.seq, {})
            calls[event.rank] = (event.op, event.data)
            gone = [r for r in self._finished if r not in calls]
            if gone:
                self._fail_waiting(event.seq, gone)
            elif len(calls) == len(self._ranks):
                self._complete(event.seq)
        elif isinstance(event, ev.Finished):
            self._finished[event.rank] = self._calls.get(event.rank, 0)
            for seq, calls in list(self._pending.items()):
                if event.rank not in calls:
                    self._fail_waiting(seq, [event.rank])

    def _complete(self, seq: int) -> None:
        calls = self._pending.pop(seq)
        ops = {op for op, _ in calls.values()}
        if len(ops) > 1:
            by_op = ", ".join(f"rank {r}: {op}()" for r, (op, _) in sorted(calls.items()))
            error = (
                f"{_API}: the ranks made different collective calls as their call #{seq} ({by_op}). Every rank "
                f"must call barrier() and broadcast_from_rank_zero() in the same order; check for a call inside "
                f"an `if rank == 0:` branch."
            )
            self._reply(calls, (seq, None, error))
            return
        (op,) = ops
        if op in self._answers:
            data = self._answers[op]()
        else:
            data = calls[min(calls)][1] if op == "broadcast_from_rank_zero" else None
        self._reply(calls, (seq, data, None))

    def _fail_waiting(self, seq: int, gone) -> None:
        calls = self._pending.pop(seq)
        op = next(iter(calls.values()))[0]
        who = ", ".join(f"rank {r} (after {self._finished[r]} collective call(s))" for r in sorted(gone))
        error = (
            f"{_API}.{op}() call #{seq} can never complete: {who} returned from the train function without "
            f"making it. Every rank must call barrier() and broadcast_from_rank_zero() the same number of "
            f"times; check for a call inside an `if rank == 0:` branch or a loop whose length differs by rank."
        )
        self._reply(calls, (seq, None, error))

    def _reply(self, calls, reply) -> None:
        for rank in calls:
            try:
                self._group.send(rank, msg.CollectiveDone(*reply))
            except OSError:
                pass  # the rank is gone; the attempt fails on its own exit
