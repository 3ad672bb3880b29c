"""Collective summaries compared across ranks: pure functions over the records workers write."""

from rafter._diagnose.collectives import counts_line, explain
from rafter._diagnose.verdict import RankOutcome, build_verdict
from rafter._worker.collectives import signature, summarize


def entry(seq, kind="all_reduce", shape=(3,), dtype="float32", t=100.0):
    return {"seq": seq, "kind": kind, "shapes": [list(shape)] if kind != "barrier" else [],
            "dtypes": [dtype] if kind != "barrier" else [], "time": t + seq}


def summary(entries, why="asked", t=200.0):
    return {"count": entries[-1]["seq"], "recent": entries[-8:], "why": why, "time": t,
            "signatures": {signature(e): sum(signature(x) == signature(e) for x in entries) for e in entries}}


def outcome(rank, entries, **kw):
    o = RankOutcome(rank, pid=100 + rank, host="h", **kw)
    o.evidence["collectives"] = summary(entries, why="returned" if kw.get("finished") else "asked")
    return o


def test_a_shape_that_differs_on_one_rank_is_named_with_both_shapes():
    outcomes = {r: outcome(r, [entry(1), entry(2, shape=(4,) if r == 1 else (3,))]) for r in range(4)}
    found = explain(outcomes)
    assert found.rank == 1 and found.kind == "collective_mismatch"
    assert found.headline == "is out of step: all_reduce #2 got shape [4] on rank 1 and [3] on ranks 0, 2, 3"


def test_shapes_may_differ_in_all_to_all():
    outcomes = {r: outcome(r, [entry(1, kind="all_to_all", shape=(r + 1,))]) for r in range(2)}
    assert explain(outcomes) is None


def test_a_rank_behind_that_returned_is_the_cause():
    outcomes = {0: outcome(0, [entry(s) for s in range(1, 6)], finished=True, reports=5)}
    outcomes.update({r: outcome(r, [entry(s) for s in range(1, 7)]) for r in (1, 2, 3)})
    found = explain(outcomes)
    assert found.rank == 0
    assert found.headline.startswith("returned at report 5 while ranks 1–3 were still in all_reduce #6: it left "
                                     "the training loop after 5 batches")


def test_the_verdict_puts_the_rank_behind_first_and_peer_errors_after():
    peer = {"type": "RuntimeError", "message": "Connection closed by peer [127.0.0.1]:1", "traceback": "",
            "time": 10.0, "phase": "train function"}
    outcomes = [outcome(0, [entry(1), entry(2)], exit_time=10.1, error=dict(peer)),
                outcome(1, [entry(1)], finished=True, reports=1)]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/l")
    assert err.rank == 1 and err.first_line.startswith("Rank 1 (pid 101, host h) returned at report 1 while rank 0 "
                                                       "was still in all_reduce #2")
    assert "rank 0: lost the connection to a failed peer" in str(err)
    assert "Collectives entered: rank 0: 2 (last all_reduce [3] float32); rank 1: 1" in str(err)


def test_a_known_root_cause_is_not_replaced():
    boom = {"type": "KeyError", "message": "'label'", "traceback": "", "time": 5.0, "phase": "train function"}
    outcomes = [outcome(0, [entry(1), entry(2)], exit_time=6.0, killed_by_rafter=True),
                outcome(1, [entry(1)], exit_time=5.1, error=boom)]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/l")
    assert err.rank == 1 and "raised KeyError" in err.first_line


def test_counts_group_ranks_at_the_same_place():
    outcomes = {r: outcome(r, [entry(1), entry(2)] if r else [entry(1)]) for r in range(3)}
    assert counts_line(outcomes) == ("Collectives entered: rank 0: 1 (last all_reduce [3] float32); "
                                     "ranks 1, 2: 2 (last all_reduce [3] float32)")


def test_summarize_keeps_the_default_group_and_names_dtypes():
    import pickle

    def raw(seq, group="0", p2p=False):
        return {"collective_seq_id": seq, "profiling_name": "gloo:all_reduce", "input_sizes": [[2, 3]],
                "input_dtypes": ["Double"], "time_created_ns": 5_000_000_000, "process_group": (group, "x"),
                "is_p2p": p2p}

    dump = pickle.dumps({"entries": [raw(1), raw(1, group="1"), raw(2), raw(0, p2p=True)]})
    s = summarize(dump)
    assert s["count"] == 2 and [e["seq"] for e in s["recent"]] == [1, 2]
    assert s["recent"][0] == {"seq": 1, "kind": "all_reduce", "shapes": [[2, 3]], "dtypes": ["float64"], "time": 5.0}
    assert s["signatures"] == {"all_reduce [[2, 3]] ['float64']": 2}


def test_a_rank_that_crashed_outside_a_collective_is_named_for_its_crash_not_for_being_behind():
    """Its summary (asked before it crashed) is behind the others', because it died: the crash is the
    root cause. A native crash stays open to a collective story only when the ranks disagree on a
    collective (a dtype mismatch aborts inside gloo)."""
    import signal

    peer = {"type": "RuntimeError", "message": "Connection closed by peer [127.0.0.1]:1", "traceback": "",
            "time": 5.2, "phase": "train function"}
    outcomes = [outcome(0, [entry(1), entry(2)], exit_time=5.3, error=dict(peer)),
                outcome(1, [entry(1), entry(2)], exit_time=5.3, error=dict(peer)),
                outcome(2, [entry(1)], exit_time=5.0, signal=signal.SIGSEGV)]
    err = build_verdict(outcomes, run_start=0.0, log_dir="/l")
    assert err.rank == 2 and err.kind == "crash", err.first_line
    assert "crashed with SIGSEGV in native code" in err.first_line
    mismatch = [outcome(r, [entry(1), entry(2, dtype="float64" if r == 2 else "float32")], exit_time=5.0 + r / 10,
                        signal=signal.SIGABRT if r == 2 else None, error=None if r == 2 else dict(peer))
                for r in range(3)]
    err = build_verdict(mismatch, run_start=0.0, log_dir="/l")
    assert err.rank == 2 and err.kind == "collective_mismatch", err.first_line
