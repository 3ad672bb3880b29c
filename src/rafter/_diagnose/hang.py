"""Hang watch: a rank that shows no progress for ``hang_timeout_s`` triggers a stack dump of every rank.

Progress is a report (or any event from the rank), dated by its own time stamp. The timeout is
``RunConfig(hang_timeout_s)`` when set; otherwise it is derived from the run itself: 10 x the longest gap
seen between two reports of a rank, at least 60 s, and 10 minutes before the first report (model loading,
data downloads). It is never the 30-minute collective timeout.

The dump uses faulthandler (armed in every worker on SIGUSR1), which works even while the rank's main
thread is blocked inside a C++ collective. The stacks say who is where: ranks waiting inside a
torch.distributed collective are held up by the ranks that are not. The monitor then asks the
controller to stop the group (a ``Stop`` decision carrying the stacks as evidence).
"""

from __future__ import annotations

import heapq
import os
import time
from typing import Dict, List, Optional, Set, Tuple

from rafter._backends import events as ev
from rafter._diagnose.decision import AttemptView, Stop, progress_time
from rafter._diagnose.stacks import locate, single_out, trim_dump
from rafter._worker.bootstrap import STACK_DUMP_SIGNAL
from rafter._worker.collectives import COLLECTIVES_SIGNAL

BEFORE_FIRST_REPORT_S = 600.0
MIN_DERIVED_S = 60.0
GAP_FACTOR = 10.0
DUMP_WAIT_S = 2.0


def derived_timeout(max_gap: Optional[float]) -> float:
    if max_gap is None:
        return BEFORE_FIRST_REPORT_S
    return max(MIN_DERIVED_S, GAP_FACTOR * max_gap)


def _read_dump(path: str, deadline: float) -> str:
    """Wait (bounded) for faulthandler to finish writing, i.e. for the file to stop growing."""
    last = -1
    while True:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        if size and size == last:
            break
        if time.monotonic() > deadline:
            break
        last = size
        time.sleep(0.05)
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _trim(dump: str) -> str:
    return trim_dump(dump)


class HangMonitor:
    def __init__(self, view: AttemptView) -> None:
        self.group = view.group
        self.view = view
        self.explicit: Optional[float] = view.run_config.hang_timeout_s
        self.start = time.time()
        self.last: Dict[int, float] = {}  # a rank's clock starts when it says hello (start-up is not a hang)
        # The ranks still running, as a heap of (last progress, rank) with stale entries left in until they
        # reach the top or outnumber the live ones: a tick reads the top, so it costs O(1) however many ranks
        # there are, and an event O(log ranks). Progress is dated by the event's own stamp (metrics-only
        # reports are read in batches), so events do not arrive in the order of their dates.
        self.watched: List[Tuple[float, int]] = []
        self.running: Set[int] = set()
        self.max_gap: Optional[float] = None
        self.fired = False

    def on_event(self, event) -> None:
        """Progress: the rank's clock restarts. Never a decision."""
        if isinstance(event, ev.CollectivesSummary):
            return  # rafter asked for it: an answer is not progress
        if event.rank not in self.last and not isinstance(event, ev.Hello):
            return
        now = max(progress_time(event), self.last.get(event.rank, 0.0))
        if isinstance(event, ev.Reported):
            if self.view.outcomes[event.rank].reports > 1:
                gap = now - self.last[event.rank]
                self.max_gap = gap if self.max_gap is None else max(self.max_gap, gap)
        self.last[event.rank] = now
        outcome = self.view.outcomes[event.rank]
        if not outcome.finished and outcome.exit_time is None:
            self.running.add(event.rank)
            heapq.heappush(self.watched, (now, event.rank))
            if len(self.watched) > 2 * len(self.running) + 64:  # mostly stale: rebuild (amortized O(1))
                self.watched = [(self.last[r], r) for r in self.running]
                heapq.heapify(self.watched)
        else:
            self.running.discard(event.rank)

    def _least_recent(self) -> Optional[float]:
        """The last progress of the running rank that progressed least recently."""
        while self.watched:
            when, rank = self.watched[0]
            if rank in self.running and self.last[rank] == when:
                return when
            heapq.heappop(self.watched)  # superseded by a later event, or the rank is done
        return None

    @property
    def timeout(self) -> float:
        return self.explicit if self.explicit is not None else derived_timeout(self.max_gap)

    def due(self) -> Optional[float]:
        """When the attempt counts as hung: the least recently progressing rank's last progress plus the
        timeout, or, while a rank has not said hello yet, the start plus (at least) BEFORE_FIRST_REPORT_S
        (a start-up that never ends is a hang too). None once fired or failed."""
        if self.fired or self.view.first_failure is not None:
            return None
        timeout = self.timeout
        least = self._least_recent()
        dues = [least + timeout] if least is not None else []
        if len(self.last) < len(self.group.ranks):
            dues.append(self.start + max(timeout, BEFORE_FIRST_REPORT_S))
        return min(dues, default=None)

    def tick(self, now: float) -> Optional[Stop]:
        due = self.due()
        if due is None or now <= due:
            return None
        self.fired = True
        return self._diagnose(now, self.timeout)

    def _diagnose(self, now: float, timeout: float) -> Stop:
        specs = {r: self.group.spec(r) for r in self.group.ranks}
        for r in self.group.ranks:
            try:
                open(specs[r].stack_file, "w").close()
            except OSError:
                pass
        alive = [r for r in self.group.ranks if self.group.signal(r, STACK_DUMP_SIGNAL)]
        for r in alive:
            if r in self.last:  # said hello: its worker answers this signal (before, it would end it)
                self.group.signal(r, COLLECTIVES_SIGNAL)  # each rank's collectives, for the verdict
        deadline = time.monotonic() + DUMP_WAIT_S
        dumps = {r: _read_dump(specs[r].stack_file, deadline) for r in alive}
        locations = {r: locate(text) for r, text in dumps.items()}
        culprits, summary = single_out(locations)
        stacks = "\n".join(f"--- rank {r} ---\n{_trim(dumps[r]).rstrip()}" for r in sorted(dumps))
        targets = culprits or sorted(dumps)[:1]
        evidence = {}
        for r in targets:
            idle = now - self.last.get(r, self.start)
            where = locations[r].describe() if r in locations else "unknown"
            others = [o for o in sorted(locations) if o not in culprits]
            if culprits:
                headline = f"hung: no progress for {idle:.1f} s, {where}" + (
                    f", while {'rank' if len(others) == 1 else 'ranks'} {', '.join(map(str, others))} "
                    f"wait{'s' if len(others) == 1 else ''} in "
                    f"{locations[others[0]].collective} for it" if others and locations[others[0]].collective else "")
            else:
                headline = f"hung with every rank: no progress for {idle:.1f} s ({summary})"
            evidence[r] = {"hang": {
                "time": now, "headline": headline, "details": f"Where each rank is: {summary}\n\n{stacks}",
                "fix": (f"Every rank must make the same collective calls in the same order. Look at what rank "
                        f"{r} is doing instead (its stack above). rafter declared the hang after "
                        f"{timeout:g} s without progress; set RunConfig(hang_timeout_s=...) to change that."),
                "timeout_s": timeout, "locations": {k: v.describe() for k, v in locations.items()},
            }}
        return Stop(evidence, ranks=None, reason="stopped by rafter after the hang was diagnosed")

    def close(self) -> None:
        pass
