"""Verdicts as pure functions over rank outcomes: root cause first, consequences grouped."""

import pickle
import signal

from rafter._controller.failure_policy import should_retry
from rafter._diagnose.verdict import RankOutcome, build_verdict


def exc(message, t, type_="RuntimeError", phase="train function"):
    return {"type": type_, "message": message, "traceback": f"Traceback...\n{type_}: {message}", "time": t,
            "phase": phase}


def test_signal_death_beats_earlier_looking_collateral_errors():
    outcomes = [
        RankOutcome(0, pid=10, host="h", error=exc("Connection closed by peer [127.0.0.1]:4000", 5.0), exit_time=5.1),
        RankOutcome(1, pid=11, host="h", reports=7, signal=signal.SIGKILL, exit_time=5.2),
    ]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/logs")
    assert err.first_line == "Rank 1 (pid 11, host h) was killed by SIGKILL — at report 7, 5.2 s into the run."
    assert err.kind == "signal" and err.rank == 1
    assert "rank 0: lost the connection to a failed peer" in str(err)


def test_earliest_real_exception_is_the_root():
    outcomes = [
        RankOutcome(0, pid=1, error=exc("late", 9.0), exit_time=9.1),
        RankOutcome(1, pid=2, error=exc("early", 3.0, "ValueError"), exit_time=3.1),
    ]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/l")
    assert err.rank == 1 and "raised ValueError: early" in err.first_line


def test_ranks_stopped_by_rafter_are_consequences():
    outcomes = [
        RankOutcome(0, pid=1, error=exc("boom", 1.0), exit_time=1.0),
        RankOutcome(1, pid=2, signal=signal.SIGKILL, exit_time=1.6, killed_by_rafter=True,
                    kill_reason="stopped by rafter after rank 0 failed"),
        RankOutcome(2, pid=3, signal=signal.SIGKILL, exit_time=1.6, killed_by_rafter=True,
                    kill_reason="stopped by rafter after rank 0 failed"),
    ]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/l")
    assert err.rank == 0
    assert "ranks 1, 2: stopped by rafter after rank 0 failed" in str(err)


def test_exit_codes_and_earlier_attempts():
    outcomes = [RankOutcome(0, pid=1, exit_code=7, exit_time=2.0), RankOutcome(1, finished=True)]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/l", attempt=3, attempt_errors=["a1", "a2"])
    assert "exited with code 7" in err.first_line and "(attempt 3)" in err.first_line
    assert "attempt 1: a1" in str(err) and "attempt 2: a2" in str(err)


def test_native_crash_shows_the_faulthandler_stack():
    tail = ["some output", "Fatal Python error: Segmentation fault", "", "Current thread 0x1 (most recent call first):",
            '  File "train.py", line 3 in step']
    err = build_verdict([RankOutcome(0, pid=1, signal=signal.SIGSEGV, exit_time=1.0, log_tail=tail)],
                        run_start=0.0, log_dir="/l")
    assert err.kind == "crash" and "crashed with SIGSEGV in native code" in err.first_line
    assert 'File "train.py", line 3 in step' in str(err)


def test_verdict_pickles_with_its_fields():
    err = build_verdict([RankOutcome(0, pid=1, error=exc("x", 1.0), exit_time=1.0)], run_start=0.0, log_dir="/l")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err) and str(clone) == str(err)
    assert clone.failures == err.failures and clone.evidence == err.evidence and clone.kind == "exception"


def test_failure_policy():
    err = build_verdict([RankOutcome(0, pid=1, error=exc("x", 1.0), exit_time=1.0)], run_start=0.0, log_dir="/l")
    assert should_retry(err, failures_so_far=1, max_failures=1)
    assert not should_retry(err, failures_so_far=2, max_failures=1)
    assert not should_retry(err, failures_so_far=1, max_failures=0)
    assert should_retry(err, failures_so_far=100, max_failures=-1)
    startup = build_verdict([RankOutcome(0, pid=1, error=exc("No module named x", 1.0, "ModuleNotFoundError",
                                                              phase="loading the train function"), exit_time=1.0)],
                            run_start=0.0, log_dir="/l")
    assert startup.kind == "startup" and not should_retry(startup, failures_so_far=1, max_failures=-1)
