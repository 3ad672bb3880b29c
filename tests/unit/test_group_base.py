"""The shared half of a worker group keeps its exits per event (a driver turn is O(events), not O(ranks)):
an exit is held back until the rank's output is drained or the grace period ends, and the group has exited
only when every rank's exit has been handed over."""

import time
from types import SimpleNamespace

from rafter._backends import base
from rafter._backends import events as ev
from rafter._backends.base import GroupBase, RankState


class NoOutput:
    def lines(self):
        return []


class Group(GroupBase):
    def __init__(self, n):
        super().__init__({})
        for r in range(n):  # ranks added after the base's __init__, as the local group does
            self._ranks[r] = RankState(SimpleNamespace(rank=r), NoOutput())
        self.drained = set()

    def _output_done(self, state):
        return state.spec.rank in self.drained

    def poll(self):
        out = []
        self._flush_exits(out)
        return out


def test_the_group_has_exited_once_every_exit_is_handed_over(monkeypatch):
    monkeypatch.setattr(base, "EXIT_LOG_GRACE_S", 60.0)
    g = Group(3)
    assert g.ranks == [0, 1, 2] and not g.all_exited()
    g._exited(g._ranks[1], 0)
    g._exited(g._ranks[1], 0)  # a second report of the same death counts once
    g.drained.add(1)
    assert [e.rank for e in g.poll()] == [1] and g.poll() == []
    g._exited(g._ranks[0], -9)
    g._exited(g._ranks[2], 3)
    g.drained.add(2)
    [exited] = g.poll()
    assert isinstance(exited, ev.Exited) and (exited.rank, exited.exit_code) == (2, 3)
    assert not g.all_exited()  # rank 0 died, but its output is not drained yet
    g._ranks[0].exit_deadline = time.time() - 1  # its grace period is over
    [exited] = g.poll()
    assert (exited.rank, exited.signal) == (0, 9) and g.all_exited()
