"""Ranks out of step in their collectives: which rank, and how, from each rank's flight-recorder summary.

Each rank's summary (``rafter._worker.collectives``) says how many collectives of the default group it
has entered (``count``: the sequence number of its last), the last few in full (kind, shapes, dtypes,
start time, calling line), and how often each signature occurred. Compared across ranks:

- the same sequence number with a different kind, shape or dtype is a *mismatch*: the odd ranks out are
  the cause ("all_reduce #9 got shape [4] on rank 1 and [3] on ranks 0, 2, 3");
- ranks behind the others are the cause of the others' wait: they returned, left the loop (uneven
  data), or are late (a straggler past ``TorchConfig(timeout_s)``).

``CollectiveWatch`` (a controller monitor) asks every live rank for its summary and its stack as soon as
one rank fails, and collects the summaries when the attempt ends. ``explain`` is a pure function.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from rafter._backends import events as ev
from rafter._diagnose.decision import Note, Stop
from rafter._worker.bootstrap import STACK_DUMP_SIGNAL
from rafter._worker.collectives import COLLECTIVES_SIGNAL, signature

_TIMEOUT = re.compile(r"Timed out|timed out|Socket Timeout|timeout", re.IGNORECASE)
_UNEVEN_FIX = ("Every rank must run the same number of steps. Give each rank the same number of batches: "
               "DistributedSampler(dataset, drop_last=True) (or prepare_data_loader) with DataLoader(..., "
               "drop_last=True), or wrap the loop in `with model.join():` "
               "(torch.distributed.algorithms.Join) for uneven inputs.")


@dataclass
class Finding:
    rank: int
    kind: str  # "collective_mismatch" | "out_of_step" | "straggler"
    headline: str
    fix: str
    time: Optional[float]


def _ranks(ranks: List[int]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}–{ranks[-1]}"
    return "ranks " + ", ".join(map(str, ranks))


def _shape(entry: dict) -> str:
    shapes = entry["shapes"]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)


def _dtype(entry: dict) -> str:
    dtypes = entry["dtypes"]
    return dtypes[0] if len(set(dtypes)) == 1 else str(dtypes)


def _minority(groups: Dict[str, List[int]]) -> List[int]:
    """The odd ranks out: the smallest group; on a tie, the group without the lowest rank."""
    lowest = min(r for ranks in groups.values() for r in ranks)
    return min(groups.values(), key=lambda ranks: (len(ranks), lowest in ranks))


# Collectives whose tensors must have the same shape and dtype on every rank (all_to_all, gather, scatter
# and list all_gathers may legitimately differ).
_SAME_TENSORS = {"all_reduce", "allreduce", "allreduce_coalesced", "broadcast", "reduce", "all_gather_into_tensor",
                 "_allgather_base", "allgather_into_tensor_coalesced", "reduce_scatter_tensor", "_reduce_scatter_base"}


def _key(entry: dict) -> str:
    return signature(entry) if entry["kind"] in _SAME_TENSORS else entry["kind"]


def _mismatch(summaries: Dict[int, dict]) -> Optional[Finding]:
    by_seq: Dict[int, Dict[int, dict]] = {}
    for rank, s in summaries.items():
        for entry in s.get("recent", []):
            by_seq.setdefault(entry["seq"], {})[rank] = entry
    for seq in sorted(by_seq):
        entries = by_seq[seq]
        if len(entries) < 2:
            continue
        groups: Dict[str, List[int]] = {}
        for rank in sorted(entries):
            groups.setdefault(_key(entries[rank]), []).append(rank)
        if len(groups) == 1:
            continue
        odd = _minority(groups)
        rest = sorted(r for r in entries if r not in odd)
        mine, theirs = entries[odd[0]], entries[rest[0]]
        where = ""
        if mine["kind"] != theirs["kind"]:
            done = summaries[odd[0]].get("signatures", {}).get(signature(theirs), 0)
            if done:
                return Finding(odd[0], "out_of_step", (
                    f"left the training loop after {done} batches and called {mine['kind']} #{seq}{where}, while "
                    f"{_ranks(rest)} wait{'s' if len(rest) == 1 else ''} in {theirs['kind']} #{seq} "
                    f"(uneven data: use drop_last/DistributedSampler or join)"), _UNEVEN_FIX, mine.get("time"))
            return Finding(odd[0], "collective_mismatch", (
                f"is out of step: collective #{seq} is {mine['kind']} on {_ranks(odd)} and "
                f"{theirs['kind']} on {_ranks(rest)}{where}"),
                "Every rank must make the same collective calls in the same order; look for a collective "
                "inside an `if rank == ...` branch or a loop whose length differs between ranks.", mine.get("time"))
        what, a, b = (("shape", _shape(mine), _shape(theirs)) if mine["shapes"] != theirs["shapes"]
                      else ("dtype", _dtype(mine), _dtype(theirs)))
        return Finding(odd[0], "collective_mismatch", (
            f"is out of step: {mine['kind']} #{seq} got {what} {a} on {_ranks(odd)} and {b} on "
            f"{_ranks(rest)}{where}"),
            f"Every rank must pass tensors of the same {what} to a collective. Check how {_ranks(odd)} "
            f"builds the tensor it passes (its {what} is {a}, the others' {b}).", mine.get("time"))
    return None


def _behind(summaries: Dict[int, dict], outcomes: Dict[int, object], hang: Optional[dict]) -> Optional[Finding]:
    counts = {r: s.get("count", 0) for r, s in summaries.items()}
    top = max(counts.values())
    waiting = sorted(r for r, c in counts.items() if c == top)
    behind = sorted(r for r, c in counts.items() if c < top)
    if not behind or not waiting:
        return None
    rank = min(behind, key=lambda r: (counts[r], r))
    awaited = next(e for e in summaries[waiting[0]]["recent"] if e["seq"] == top)
    entered = min(e["time"] for r in waiting for e in summaries[r]["recent"] if e["seq"] == top)
    kind = f"{awaited['kind']} #{top}"
    done = summaries[rank].get("signatures", {}).get(signature(awaited), 0)
    o = outcomes[rank]
    s = summaries[rank]
    verb = "was" if len(waiting) == 1 else "were"
    if o.finished or s.get("why") == "returned":
        left = (f": it left the training loop after {done} batches, the others did not (uneven data: use "
                f"drop_last/DistributedSampler or join)" if done else "")
        return Finding(rank, "out_of_step", (
            f"returned {f'at report {o.reports}' if o.reports else 'before its first report'} while "
            f"{_ranks(waiting)} {verb} still in {kind}{left}"),
            _UNEVEN_FIX if done else (
                "Every rank must make the same collectives: a rank may only return when the others do. Look for "
                f"an early `return`/`break` on {_ranks([rank])}."), s.get("time"))
    if hang is not None:
        # A hang: say where the rank is; "left the loop" is only a guess (it may wait on I/O or a lock).
        where = hang.get("locations", {}).get(rank) or "elsewhere"
        own = o.evidence.get("hang")
        headline = (own["headline"].replace(f"in {awaited['kind']} for it", f"in {kind} for it")
                    if own and f"in {awaited['kind']} for it" in own["headline"] else
                    f"hung: no progress, {where}, while {_ranks(waiting)} wait{'s' if len(waiting) == 1 else ''} "
                    f"in {kind} for it")
        if done:
            headline += (f" (it made {done} such calls before: if it left the training loop early, the data is "
                         f"uneven: use drop_last/DistributedSampler or join)")
        return Finding(rank, "hang", headline, (
            f"Every rank must make the same collective calls in the same order. Look at what rank {rank} is doing "
            f"instead (its stack above). rafter declared the hang after {hang.get('timeout_s', 0):g} s without "
            "progress; set RunConfig(hang_timeout_s=...) to change that."), hang.get("time"))
    timeouts = [r for r in waiting if outcomes[r].error and _TIMEOUT.search(outcomes[r].error.get("message", ""))]
    timeout_s = s.get("timeout_s")
    late = (s.get("time") or entered) - entered
    if timeouts:
        limit = f" (timeout {timeout_s:g} s)" if timeout_s else ""
        return Finding(rank, "straggler", (
            f"had not reached {kind} {late:.1f} s after {_ranks(waiting)} entered it{limit}: a straggler"),
            f"{_ranks([rank])} was slower than the collective timeout allows (its stack above shows where it "
            "was). Make the slow step faster or move it out of the loop, or raise TorchConfig(timeout_s=...).",
            s.get("time"))
    return Finding(rank, "out_of_step", (
        f"had not reached {kind} that {_ranks(waiting)} {verb} in when {'it' if len(waiting) == 1 else 'they'} "
        f"failed"), "Every rank must make the same collective calls in the same order; see where "
        f"{_ranks([rank])} was instead (its stack above).", s.get("time"))


def explain(outcomes: Dict[int, object], hang: Optional[dict] = None) -> Optional[Finding]:
    """The collective story of a failed attempt, if the ranks were out of step. ``outcomes``: rank ->
    RankOutcome with ``evidence["collectives"]``; ``hang``: the hang monitor's evidence, if it fired."""
    summaries = {r: o.evidence["collectives"] for r, o in outcomes.items() if o.evidence.get("collectives")}
    if len(summaries) < 2:
        return None
    return _mismatch(summaries) or _behind(summaries, outcomes, hang)


class CollectiveWatch:
    """Reads the ranks' collective summaries for the verdict, and catches a mismatch that hangs silently.

    - When the first rank fails, the live ranks are asked for their summaries and stacks (before rafter
      stops them); when the attempt ends, each rank's summary (and that stack) goes into its evidence.
    - A rank that goes quiet (no report for a while: ``rafter._worker.collectives.Quiet``, in the rank)
      sends its summary unasked. The live ranks whose latest summary is older than that rank's last report
      are then asked for theirs, and once all are in (or after ``ANSWER_WAIT_S``), a collective mismatch
      among them ends the attempt at once instead of at a timeout. The timer is the ranks': the driver has
      no deadline of its own while the run is healthy, so it need not wake to notice a silence."""

    ANSWER_WAIT_S = 2.0  # how long the asked ranks get to answer

    def __init__(self, view) -> None:
        self.group = view.group
        self.attempt = view
        self.timeout_s = view.timeout_s
        self.asked: List[int] = []
        self.spell: Optional[float] = None  # a quiet rank's last report: summaries from before it are stale
        self.spell_asked_at = 0.0
        self.stopped = False
        self.received: Dict[int, dict] = {}  # rank -> its latest summary

    def _summary(self, rank: int) -> Optional[dict]:
        """The rank's latest summary, as it sent it over its channel (on every backend and node; the copy in
        its log folder is for the user)."""
        return self.received.get(rank)

    def on_event(self, event) -> Optional[Stop]:
        if not isinstance(event, ev.CollectivesSummary):
            return None
        self.received[event.rank] = event.summary
        if self.stopped or self.attempt.failed_ranks():
            return None  # a failed attempt: the verdict reads the summaries
        if event.summary.get("why") == "quiet" and self.spell is None:
            self.spell = event.summary.get("since", event.summary.get("time", 0.0))
            self.spell_asked_at = time.time()
            for rank in self._live():
                if not self._fresh(rank):
                    self.group.signal(rank, COLLECTIVES_SIGNAL)
        return self._compare() if self.spell is not None else None

    def due(self) -> Optional[float]:
        if self.stopped or self.spell is None or self.attempt.failed_ranks():
            return None  # a failed attempt: tick asks once, then the failure grace decides
        return self.spell_asked_at + self.ANSWER_WAIT_S

    def _live(self) -> List[int]:
        """Ranks still running that said hello (so have the signal's handler: before, it would kill them)."""
        return [r for r, o in self.attempt.outcomes.items() if o.pid is not None and not (o.failed or o.finished)]

    def _fresh(self, rank: int) -> bool:
        s = self._summary(rank)
        return s is not None and s.get("time", 0.0) >= self.spell

    def tick(self, now: float) -> Optional[Stop]:
        if self.stopped:
            return None
        if self.attempt.failed_ranks():
            self._ask_before_the_stop()
            return None
        return self._compare() if self.spell is not None else None  # it waits for the answers or their deadline

    def _compare(self) -> Optional[Stop]:
        """Once every live rank's summary of this quiet spell is in (or the wait is over): a mismatch among them
        stops the attempt."""
        live = self._live()
        summaries = {r: self.received[r] for r in live if self._fresh(r)}
        if len(summaries) < len(live) and time.time() - self.spell_asked_at < self.ANSWER_WAIT_S:
            return None  # not every answer is in yet
        self.spell = None
        if len(summaries) > 1 and _mismatch(summaries) is not None:
            self.stopped = True
            return Stop(reason="stopped by rafter: the ranks are out of step in their collectives")
        return None

    def _ask_before_the_stop(self) -> None:
        if self.asked or any("hang" in o.evidence for o in self.attempt.outcomes.values()):
            return  # asked already, or the hang monitor did
        for rank in self._live():
            try:
                open(self.group.spec(rank).stack_file, "w").close()
            except OSError:
                pass
            if self.group.signal(rank, COLLECTIVES_SIGNAL):
                self.group.signal(rank, STACK_DUMP_SIGNAL)
                self.asked.append(rank)
        self.asked = self.asked or [-1]

    def close(self) -> Note:
        """Each rank's collective summary (and the stack asked for at the first failure), for the verdict."""
        evidence: Dict[int, Dict[str, object]] = {}
        for rank, o in self.attempt.outcomes.items():
            spec = self.group.spec(rank)
            summary = self._summary(rank)
            if summary is None:
                continue
            summary = dict(summary, timeout_s=self.timeout_s)
            evidence[rank] = {"collectives": summary}
            if rank in self.asked and "hang" not in o.evidence:
                try:
                    with open(spec.stack_file) as f:
                        stack = f.read()
                except OSError:
                    stack = ""
                if stack.strip():
                    evidence[rank]["stack"] = stack
        return Note(evidence)


def counts_line(outcomes: Dict[int, object]) -> Optional[str]:
    """ "Collectives entered: ranks 0, 1: 15 (last all_reduce [20] float32); rank 2: 14 (last barrier)". """
    groups: Dict[Tuple[int, str], List[int]] = {}
    for r, o in sorted(outcomes.items()):
        s = o.evidence.get("collectives")
        if not s:
            continue
        last = s["recent"][-1] if s.get("recent") else None
        desc = f"last {last['kind']} {_shape(last)} {_dtype(last)}" if last else "none yet"
        groups.setdefault((s.get("count", 0), desc), []).append(r)
    if not groups:
        return None
    return "Collectives entered: " + "; ".join(f"{_ranks(rs)}: {c} ({d})" for (c, d), rs in groups.items())
