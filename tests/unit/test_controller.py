"""The run loop, step by step, against a scripted worker group: no processes, a real run folder.

A ``ScriptedBackend`` hands out one ``ScriptedGroup`` per attempt. Each ``poll()`` returns the next batch
of its script (the events a real group would have made of its sockets), after the ranks that the
controller killed have exited. Every step records the controller's phase.
"""

import json
import signal
import time

import cloudpickle
import pytest

from rafter._backends import events as ev
from rafter._controller import controller as controller_mod
from rafter._controller.controller import Controller, RunPhase
from rafter._diagnose.decision import Stop
from rafter.train import Callback, ControllerError, FailureConfig, RunConfig, ScalingConfig, WorkerGroupError


def train_fn(config):  # never runs: the scripted groups stand in for its workers
    return config


def hello(rank):
    return ev.Hello(rank, 1000 + rank, "testhost", time.time())


def report(rank, index, **metrics):
    return ev.Reported(rank, index, metrics, None, time.time())


def finished(rank, value=None):
    return ev.Finished(rank, cloudpickle.dumps(value), time.time())


def raised(rank, message):
    return ev.Errored(rank, {"type": "RuntimeError", "module": "builtins", "message": message,
                             "traceback": f"RuntimeError: {message}\n", "phase": "train function",
                             "time": time.time(), "pickled": None, "exit_code": None})


def exited(rank, code=0):
    return ev.Exited(rank, code, None, time.time())


class ScriptedGroup:
    def __init__(self, controller, template, script):
        self.controller = controller
        self.template = template
        self.script = list(script)
        self.alive = {0: True, 1: True}
        self.killed = []  # (ranks, reason) as the controller asked
        self.to_exit = []
        self.phases = []
        self.timeouts = []  # what each poll() was given to wait
        self.closed = False

    ranks = [0, 1]

    def spec(self, rank):
        return self.template

    def pid(self, rank):
        return 1000 + rank

    def pids(self):
        return {}

    def log_tail(self, rank):
        return [f"rank {rank}'s last line"]

    def kill(self, ranks=None, reason="stopped by rafter", sig=signal.SIGKILL):
        ranks = self.ranks if ranks is None else ranks
        self.killed.append((list(ranks), reason))
        self.to_exit += [(r, reason) for r in ranks if self.alive[r]]

    def signal(self, rank, sig):
        return False

    def send(self, rank, message):
        raise AssertionError("nothing in these scripts asks the driver for anything")

    def poll(self, timeout):
        self.timeouts.append(timeout)
        self.phases.append(self.controller.phase)
        out = [ev.Exited(r, None, signal.SIGKILL, time.time(), killed_by_rafter=True, reason=why)
               for r, why in self.to_exit if self.alive[r]]
        self.to_exit = []
        if not out and self.script:
            out = self.script.pop(0)
        for event in out:
            if isinstance(event, ev.Exited):
                self.alive[event.rank] = False
        return out

    def all_exited(self):
        return not any(self.alive.values())

    def close(self):
        self.closed = True


class ScriptedBackend:
    """Attempt n gets scripts[n - 1]; an exception in that place is raised by start_group instead."""

    name = "scripted"

    def __init__(self, scripts):
        self.scripts = list(scripts)
        self.groups = []
        self.calls = []

    def check_resources(self, scaling):
        self.calls.append("check_resources")
        return 1

    def start(self, use_gpu):
        self.calls.append("start")

    def start_group(self, scaling, template, payload, echo=True):
        self.calls.append("start_group")
        assert self.controller.phase == RunPhase.STARTING
        assert template.world_size == scaling.num_workers == 2 and template.rank == -1  # the backend places
        script = self.scripts.pop(0)
        if isinstance(script, Exception):
            raise script
        group = ScriptedGroup(self.controller, template, script)
        self.groups.append(group)
        return group

    def shutdown(self):
        self.calls.append("shutdown")


class Ended(Callback):
    def __init__(self):
        self.results = []
        self.failures = []

    def on_failure(self, *, error, run_path):
        self.failures.append(error)

    def on_end(self, *, result, run_path):
        self.results.append(result)


def make(tmp_path, scripts, max_failures=1, monitors=()):
    ended = Ended()
    backend = ScriptedBackend(scripts)
    run_config = RunConfig(name="run", storage_path=str(tmp_path), callbacks=[ended],
                           failure_config=FailureConfig(max_failures=max_failures))
    controller = Controller(train_fn, {"lr": 1}, ScalingConfig(num_workers=2), run_config, backend_name="gloo",
                            timeout_s=60, backend=backend)
    backend.controller = controller
    controller.monitors = list(monitors)
    return controller, backend, ended


def saved(tmp_path):
    with open(tmp_path / "run" / "rafter_run.json") as f:
        return json.load(f)


@pytest.fixture(autouse=True)
def no_failure_grace(monkeypatch):
    monkeypatch.setattr(controller_mod, "FAILURE_GRACE_S", 0.0)  # stop the others at once: no waiting


FAILING = [[hello(0), hello(1)], [report(0, 0, step=0), report(1, 0, step=0)], [raised(1, "boom"), exited(1, 1)]]
SUCCEEDING = [[hello(0), hello(1)], [report(0, 0, step=0), report(1, 0, step=0)],
              [report(0, 1, step=1), report(1, 1, step=1)], [finished(0, "done"), finished(1)],
              [exited(0), exited(1)]]


def test_a_failure_stops_the_other_ranks_and_the_restart_succeeds(tmp_path):
    controller, backend, ended = make(tmp_path, [FAILING, SUCCEEDING])
    result = controller.fit()
    first, second = backend.groups
    assert first.killed == [([0, 1], "stopped by rafter after rank 1 failed")]  # rank 0 was still running
    assert second.killed == []
    assert first.closed and second.closed
    assert set(first.phases) == set(second.phases) == {RunPhase.RUNNING}
    assert backend.calls == ["check_resources", "start", "start_group", "start_group", "shutdown"]
    assert controller.phase == RunPhase.FINISHED
    assert result.return_value == "done"
    assert result.metrics == {"step": 1}
    assert [m["step"] for m in result.metrics_history] == [0, 0, 1]  # rank 0's reports of both attempts
    assert [a["error"] for a in result.attempts][1] is None
    assert result.attempts[0]["error"].startswith("Rank 1 (pid 1001, host testhost) raised RuntimeError: boom")
    assert saved(tmp_path)["status"] == "finished"
    assert len(ended.failures) == 1 and ended.failures[0].kind == "exception"
    assert len(ended.results) == 1 and ended.results[0].error is None


def test_when_no_restart_is_left_the_verdict_is_raised_and_the_run_is_failed(tmp_path):
    controller, backend, ended = make(tmp_path, [FAILING], max_failures=0)
    with pytest.raises(WorkerGroupError) as info:
        controller.fit()
    assert info.value.kind == "exception" and info.value.rank == 1
    assert controller.phase == RunPhase.FAILED
    assert backend.calls[-1] == "shutdown"
    assert saved(tmp_path)["status"] == "failed"
    assert ended.results[0].error is info.value


def test_a_restart_that_cannot_be_placed_is_a_controller_error_and_ends_the_run(tmp_path):
    no_room = ValueError("The run cannot restart: the cluster lost node 10.0.0.2, and what remains is too small.")
    controller, backend, ended = make(tmp_path, [FAILING, no_room], max_failures=3)
    with pytest.raises(ControllerError) as info:
        controller.fit()
    err = info.value
    assert str(err).startswith("Attempt 2 could not start: The run cannot restart: the cluster lost node 10.0.0.2")
    assert err.kind == "placement" and err.__cause__ is no_room
    assert len(err.attempt_errors) == 1 and "raised RuntimeError: boom" in err.attempt_errors[0]
    assert "Earlier attempts (1) failed:\n  attempt 1: Rank 1 (pid 1001, host testhost) raised" in str(err)
    assert backend.calls == ["check_resources", "start", "start_group", "start_group", "shutdown"]
    state = saved(tmp_path)
    assert state["status"] == "failed" and state["error"] == err.first_line
    assert [a["error"][:15] for a in state["attempts"]] == ["Rank 1 (pid 100", "could not start"]
    assert len(ended.results) == 1 and ended.results[0].error is err  # on_end ran, with the error


class StopsRank1AtItsFirstReport:
    """A monitor that decides (as the memory monitor does); the controller applies the decision."""

    def __init__(self, view):
        self.view = view

    def on_event(self, event):
        if isinstance(event, ev.Reported) and event.rank == 1:
            return Stop({1: {"oom": {"headline": "ran out of memory: 9 GiB over its limit", "fix": "smaller batches"}}},
                        ranks=[1], reason="out of memory")
        return None

    def tick(self, now):
        return None

    def close(self):
        pass


def test_a_monitors_decision_is_applied_by_the_controller(tmp_path):
    controller, backend, ended = make(tmp_path, [FAILING[:2] + [[]] * 3], max_failures=0,
                                      monitors=[StopsRank1AtItsFirstReport])
    with pytest.raises(WorkerGroupError) as info:
        controller.fit()
    group = backend.groups[0]
    assert group.killed[0] == ([1], "out of memory")
    assert group.killed[1] == ([0, 1], "stopped by rafter after rank 1 failed")
    assert info.value.kind == "oom" and info.value.rank == 1
    assert info.value.first_line.startswith("Rank 1 (pid 1001, host testhost) ran out of memory: 9 GiB over its limit")


class DueIn:
    """A monitor with a deadline of its own: due(), in ``seconds`` from its creation."""

    def __init__(self, view, seconds=0.05):
        self.at = time.time() + seconds
        self.ticks = []

    def due(self):
        return self.at

    def on_event(self, event):
        return None

    def tick(self, now):
        self.ticks.append(now)

    def close(self):
        return None


def test_the_loop_sleeps_poll_s_without_deadlines_and_no_longer_than_a_monitors_due(tmp_path):
    quiet = [[hello(0), hello(1)], [], [], [finished(0), finished(1)], [exited(0), exited(1)]]
    controller, backend, _ = make(tmp_path, [quiet])
    controller.fit()
    assert set(backend.groups[0].timeouts) == {controller_mod.POLL_S}

    seen = []
    controller, backend, _ = make(tmp_path, [list(quiet)], monitors=[lambda view: seen.append(DueIn(view)) or seen[-1]])
    controller.fit()
    timeouts = backend.groups[0].timeouts
    assert all(t <= 0.05 + 0.002 for t in timeouts), timeouts  # the deadline, not POLL_S
    assert timeouts[0] > 0.03  # and not a busy loop before it


def test_after_a_failure_the_loop_wakes_at_the_end_of_the_grace_not_a_tick_later(tmp_path, monkeypatch):
    monkeypatch.setattr(controller_mod, "FAILURE_GRACE_S", 0.05)
    failing = [[hello(0), hello(1)], [raised(1, "boom"), exited(1, 1)], [], [], []]
    controller, backend, _ = make(tmp_path, [failing], max_failures=0)
    with pytest.raises(WorkerGroupError):
        controller.fit()
    timeouts = backend.groups[0].timeouts
    assert timeouts[:2] == [controller_mod.POLL_S] * 2 and 0.04 < timeouts[2] <= 0.05 + 0.002, timeouts


def test_after_a_failure_the_collective_watch_does_not_make_the_loop_spin(tmp_path, monkeypatch):
    """Rank 0 goes quiet (its summary opens a spell, with an answer deadline) and rank 1 fails before it
    answers: the deadline must go with the failure (the watch no longer ticks then), or the loop would
    poll(0) over and over until the end of the grace."""
    from rafter._diagnose.collectives import CollectiveWatch

    monkeypatch.setattr(controller_mod, "FAILURE_GRACE_S", 0.2)
    monkeypatch.setattr(CollectiveWatch, "ANSWER_WAIT_S", 0.05)
    now = time.time()
    quiet = ev.CollectivesSummary(0, {"count": 1, "recent": [], "signatures": {}, "why": "quiet", "time": now,
                                      "since": now - 0.4})
    failing = [[hello(0), hello(1)], [quiet], [raised(1, "boom"), exited(1, 1)]]
    controller, backend, _ = make(tmp_path, [failing], max_failures=0, monitors=[CollectiveWatch])
    with pytest.raises(WorkerGroupError):
        controller.fit()
    timeouts = backend.groups[0].timeouts
    assert timeouts[2] <= 0.05 + 0.002, timeouts  # the spell's answer wait was a deadline ...
    after = timeouts[3:]
    assert after and min(after) > 0.0, after  # ... gone with the failure: the loop waits for the end of the grace
