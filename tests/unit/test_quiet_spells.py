"""A silent collective mismatch is noticed by the ranks' own quiet timers, not by a driver that wakes to look.

The worker half (``rafter._worker.collectives.Quiet``) decides when its rank has gone quiet; the driver half
(``CollectiveWatch``) then asks the ranks whose summaries are stale and compares. Both are pure enough to
drive by hand here; tests/integration/test_diagnosis_collectives.py produces the mismatches for real."""

import time
from types import SimpleNamespace

from rafter._backends import events as ev
from rafter._diagnose.collectives import CollectiveWatch
from rafter._diagnose.decision import AttemptView, Stop
from rafter._diagnose.memory import RELAXED_INTERVAL_S, SAMPLE_INTERVAL_S, MemoryMonitor
from rafter._diagnose.verdict import RankOutcome
from rafter._worker.collectives import COLLECTIVES_SIGNAL, MAX_QUIET_S, QUIET_S, Quiet


# -- the worker's timer ------------------------------------------------------------------------------------
def test_a_rank_is_quiet_after_quiet_s_then_after_3x_its_longest_gap_doubling_while_it_lasts():
    q = Quiet(100.0)
    assert q.due() == 100.0 + QUIET_S  # before the first report too (a mismatch can come first)
    q.went_quiet(105.0)  # a long start-up: quiet spells double ...
    assert q.due() == 105.0 + 2 * QUIET_S
    q.progressed(110.0)  # ... and the time before the first report is not a step
    assert q.longest == 0.0 and q.due() == 110.0 + QUIET_S
    for t in (110.1, 110.2, 111.2, 111.3):  # steps of 0.1 s, one of 1 s
        q.progressed(t)
    assert abs(q.due() - (111.3 + 3 * 1.0)) < 1e-9  # an epoch-sized gap is not a quiet spell
    q.went_quiet(114.3)
    q.went_quiet(120.3)
    assert abs(q.quiet_s - 12.0) < 1e-9 and q.due() == 120.3 + 12.0
    for _ in range(20):
        q.went_quiet(200.0)
    assert q.quiet_s == MAX_QUIET_S


# -- the driver's comparison -------------------------------------------------------------------------------
class Group:
    ranks = [0, 1, 2]

    def __init__(self):
        self.signals = []

    def signal(self, rank, sig):
        self.signals.append((rank, sig))
        return True


def watch():
    outcomes = {r: RankOutcome(r, pid=100 + r) for r in Group.ranks}
    view = AttemptView(1, Group(), outcomes, run_config=None, scaling=None, timeout_s=30)
    return CollectiveWatch(view)


def summary(seq_shapes, why, at, since=None):
    recent = [{"seq": seq, "kind": "allreduce", "shapes": [shape], "dtypes": ["float32"], "time": at - 0.5}
              for seq, shape in seq_shapes]
    s = {"count": recent[-1]["seq"], "recent": recent, "signatures": {}, "why": why, "time": at}
    if since is not None:
        s["since"] = since
    return s


def test_a_quiet_rank_has_the_stale_ranks_asked_and_a_mismatch_among_them_stops_the_attempt():
    w = watch()
    now = time.time()
    assert w.due() is None  # a healthy run: the driver has no deadline for this
    w.on_event(ev.CollectivesSummary(2, summary([(5, [3])], "returned", now - 30)))  # an old one
    assert w.on_event(ev.CollectivesSummary(0, summary([(5, [3]), (6, [3])], "quiet", now, since=now - 0.4))) is None
    assert sorted(w.group.signals) == [(1, COLLECTIVES_SIGNAL), (2, COLLECTIVES_SIGNAL)]  # not rank 0 itself
    assert w.due() is not None and w.due() <= time.time() + w.ANSWER_WAIT_S
    assert w.on_event(ev.CollectivesSummary(1, summary([(6, [4])], "asked", time.time()))) is None  # rank 2 missing
    decision = w.on_event(ev.CollectivesSummary(2, summary([(6, [3])], "asked", time.time())))
    assert isinstance(decision, Stop) and "out of step" in decision.reason
    assert w.due() is None and w.tick(time.time()) is None  # it decides once


def test_ranks_in_step_end_the_spell_without_a_stop_and_the_next_quiet_rank_starts_another():
    w = watch()
    now = time.time()
    w.on_event(ev.CollectivesSummary(0, summary([(6, [3])], "quiet", now, since=now - 0.4)))
    w.on_event(ev.CollectivesSummary(1, summary([(6, [3])], "asked", now + 0.01)))
    assert w.on_event(ev.CollectivesSummary(2, summary([(6, [3])], "quiet", now + 0.02, since=now - 0.4))) is None
    assert w.spell is None and w.due() is None and len(w.group.signals) == 2
    # Rank 1's own timer fires a moment later: the others' summaries are fresh, nobody is asked again.
    assert w.on_event(ev.CollectivesSummary(1, summary([(6, [3])], "quiet", now + 0.03, since=now - 0.39))) is None
    assert len(w.group.signals) == 2 and w.spell is None


def test_a_rank_that_does_not_answer_is_left_out_after_the_wait():
    """A rank that holds the GIL in native code cannot answer; the others are compared without it."""
    w = watch()
    now = time.time()
    w.on_event(ev.CollectivesSummary(0, summary([(6, [3])], "quiet", now, since=now - 0.4)))
    w.on_event(ev.CollectivesSummary(1, summary([(6, [4])], "asked", now + 0.01)))
    assert w.tick(time.time()) is None  # still waiting for rank 2
    w.spell_asked_at -= w.ANSWER_WAIT_S
    assert isinstance(w.tick(time.time()), Stop)


def test_after_a_failure_a_quiet_summary_starts_nothing():
    w = watch()
    w.attempt.outcomes[1].error = {"message": "boom"}
    now = time.time()
    assert w.on_event(ev.CollectivesSummary(0, summary([(6, [3])], "quiet", now, since=now - 0.4))) is None
    assert w.spell is None and w.due() is None and not w.group.signals


# -- the memory watch's pace -------------------------------------------------------------------------------
def memory_monitor(limit=None, threshold=0.95):
    group = SimpleNamespace(ranks=[0], pids=lambda: {})
    view = AttemptView(1, group, {0: RankOutcome(0)}, run_config=SimpleNamespace(memory_threshold=threshold),
                       scaling=SimpleNamespace(memory_per_worker=limit))
    return MemoryMonitor(view)


def test_memory_is_sampled_4_times_a_second_near_a_limit_and_once_a_second_far_from_every_limit():
    far = memory_monitor()
    far.tick(time.time())
    assert far.machine_used < far.threshold - 0.25  # this machine, with the suite running
    assert far._interval() == RELAXED_INTERVAL_S and far.due() is None  # the loop's idle tick samples
    limited = memory_monitor(limit=2**30)
    t = time.time()
    limited.tick(t)
    assert limited._interval() == SAMPLE_INTERVAL_S and abs(limited.due() - (t + SAMPLE_INTERVAL_S)) < 1e-6
    near = memory_monitor(threshold=far.machine_used + 0.1)
    near.tick(t)
    assert near._interval() == SAMPLE_INTERVAL_S and abs(near.due() - (t + SAMPLE_INTERVAL_S)) < 1e-6
