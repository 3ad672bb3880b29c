"""The hang clock of a rank starts when it says hello: a slow start-up is not a hang.

Found under load: a hang_timeout_s shorter than the workers' start-up fired before any worker had a
pid, dumped nothing, killed nothing, and the run waited forever. The monitor decides; it never kills."""

import time
from types import SimpleNamespace

from rafter._backends import events as ev
from rafter._diagnose.decision import AttemptView, Stop
from rafter._diagnose.hang import BEFORE_FIRST_REPORT_S, HangMonitor
from rafter._diagnose.verdict import RankOutcome


class Group:
    ranks = [0, 1]

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path

    def spec(self, rank):
        return SimpleNamespace(stack_file=str(self.tmp_path / f"stacks_{rank}.txt"))

    def signal(self, rank, sig):
        return False  # no process to dump: the decision is made without stacks

    def kill(self, ranks=None, reason="", sig=9):
        raise AssertionError("a monitor must not kill: it returns a Stop for the controller")


def monitor(tmp_path, timeout):
    view = AttemptView(1, Group(tmp_path), {r: RankOutcome(r) for r in (0, 1)},
                       run_config=SimpleNamespace(hang_timeout_s=timeout), scaling=None)
    return HangMonitor(view)


def test_start_up_is_not_a_hang_but_silence_after_hello_is(tmp_path):
    m = monitor(tmp_path, timeout=2)
    assert m.tick(time.time() + 30) is None  # nobody said hello yet: still starting
    for rank in (0, 1):
        assert m.on_event(ev.Hello(rank, 100 + rank, "h", time.time())) is None
    assert m.tick(time.time() + 1) is None
    decision = m.tick(time.time() + 3)
    assert isinstance(decision, Stop) and decision.ranks is None  # every rank is stopped
    assert decision.reason == "stopped by rafter after the hang was diagnosed"
    assert m.tick(time.time() + 10) is None  # it decides once


def test_a_start_up_that_never_ends_is_a_hang_and_the_group_is_stopped(tmp_path):
    m = monitor(tmp_path, timeout=2)
    decision = m.tick(time.time() + BEFORE_FIRST_REPORT_S + 1)
    assert isinstance(decision, Stop) and decision.ranks is None



def test_only_a_running_rank_silent_past_the_timeout_is_a_hang(tmp_path):
    """The monitor reads only the least recent progress (a tick costs O(1) in ranks): progress moves a rank
    to the back, and a rank that finished or exited is no longer watched."""
    m = monitor(tmp_path, timeout=2)
    t0 = time.time() - 1.0
    for rank in (0, 1):
        m.on_event(ev.Hello(rank, 100 + rank, "h", t0))
    m.on_event(ev.Reported(0, 0, {}, None, t0 + 0.5))
    assert m._least_recent() == t0 and m.due() == t0 + 2  # rank 1 has gone longest without progress
    m.view.outcomes[1].finished = True  # as the controller records it before the monitors see the event
    m.on_event(ev.Finished(1, b"", time.time()))
    assert m.running == {0} and m.due() == t0 + 0.5 + 2
    assert m.tick(t0 + 1.5) is None
    assert isinstance(m.tick(t0 + 3), Stop)  # rank 0, still running, went silent
    m = monitor(tmp_path, timeout=2)
    m.on_event(ev.Hello(0, 100, "h", time.time()))
    m.on_event(ev.Hello(1, 101, "h", time.time()))
    for rank in (0, 1):
        m.view.outcomes[rank].exit_time = time.time()
        m.on_event(ev.Exited(rank, 0, None, time.time()))
    assert m.due() is None and m.tick(time.time() + 30) is None  # nobody running: nothing can hang


def test_progress_is_dated_by_the_report_not_by_when_the_driver_read_it(tmp_path):
    """Metrics-only reports are read in batches (up to METRICS_LANE_S late), a rank's batch after another's:
    the clock of each rank runs from its own last report, whatever the order of reading."""
    m = monitor(tmp_path, timeout=2)
    t0 = time.time() - 1.0
    for rank in (0, 1):
        m.on_event(ev.Hello(rank, 100 + rank, "h", t0))
    m.on_event(ev.Reported(1, 0, {}, None, t0 + 0.9))  # rank 1's batch is read first ...
    for i in range(3):
        m.on_event(ev.Reported(0, i, {}, None, t0 + 0.1 * (i + 1)))  # ... then rank 0's, older
    assert m.due() == t0 + 0.3 + 2  # rank 0's last report, not the time its batch was read
    assert m.tick(t0 + 2.2) is None and isinstance(m.tick(t0 + 2.31), Stop)


def test_the_heap_of_progress_stays_the_size_of_the_ranks(tmp_path):
    """One rank reports at a high rate while the other is silent (only rank 0 reports, a common pattern):
    the stale entries do not pile up with time."""
    m = monitor(tmp_path, timeout=600)
    t0 = time.time() - 1.0
    for rank in (0, 1):
        m.on_event(ev.Hello(rank, 100 + rank, "h", t0))
    for i in range(10_000):
        m.on_event(ev.Reported(0, i, {}, None, t0 + i * 1e-5))
    assert len(m.watched) <= 2 * 2 + 64 and m.due() == t0 + 600
