"""The hang clock of a rank starts when it says hello: a slow start-up is not a hang.

Found under load: a hang_timeout_s shorter than the workers' start-up fired before any worker had a
pid, dumped nothing, killed nothing, and the run waited forever."""

import time
from types import SimpleNamespace

from rafter._backends import events as ev
from rafter._diagnose.hang import BEFORE_FIRST_REPORT_S, HangMonitor
from rafter._diagnose.verdict import RankOutcome


class Group:
    ranks = [0, 1]

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.killed = []

    def spec(self, rank):
        return SimpleNamespace(stack_file=str(self.tmp_path / f"stacks_{rank}.txt"))

    def signal(self, rank, sig):
        return False

    def kill(self, ranks=None, reason="", sig=9):
        self.killed.append(reason)


def monitor(tmp_path, timeout):
    attempt = SimpleNamespace(outcomes={r: RankOutcome(r) for r in (0, 1)}, first_failure=None)
    controller = SimpleNamespace(run_config=SimpleNamespace(hang_timeout_s=timeout))
    group = Group(tmp_path)
    return HangMonitor(group, attempt, controller), group


def test_start_up_is_not_a_hang_but_silence_after_hello_is(tmp_path):
    m, group = monitor(tmp_path, timeout=2)
    m.tick(time.time() + 30)  # nobody said hello yet: still starting
    assert not m.fired and group.killed == []
    for rank in (0, 1):
        m.on_event(ev.Hello(rank, 100 + rank, "h", time.time()))
    m.tick(time.time() + 1)
    assert not m.fired
    m.tick(time.time() + 3)
    assert m.fired and len(group.killed) == 1


def test_a_start_up_that_never_ends_is_a_hang_and_the_group_is_stopped(tmp_path):
    m, group = monitor(tmp_path, timeout=2)
    m.tick(time.time() + BEFORE_FIRST_REPORT_S + 1)
    assert m.fired and len(group.killed) == 1
