"""The commit barrier, the merge of ranks' files, retention and resume checks, over memory:// storage with
no processes; and the run folder's owner lease on remote storage."""

import logging
import math
import subprocess
import sys
import uuid

import pytest

from rafter import _run_folder as rf
from rafter import _run_lock
from rafter._controller.checkpoints import CheckpointConflictError, CheckpointManager
from rafter._storage import Appender, Storage
from rafter.train import CheckpointConfig, RunConfig


@pytest.fixture
def storage():
    root = f"memory://rafter-unit/{uuid.uuid4().hex}"
    s = Storage(root)
    s.makedirs(s.join("run"))
    yield s
    s.remove(root)


def manager(storage, **config):
    run = storage.join("run")
    journal = Appender(storage, storage.join_path(run, rf.CHECKPOINTS_FILE))
    return CheckpointManager(storage, run, CheckpointConfig(**config), journal, rf.RunRecord(path=run, name="run"))


def stage(storage, attempt, index, rank, files):
    """What a worker's staging does: its own folder, files hashed on the way."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        dest = storage.join("run", rf.staging_rel(attempt, index, rank))
        return {"staging": dest, "files": storage.upload_dir(d, dest), "rank": rank}


def replayed(storage):
    record = rf.RunRecord(path=storage.join("run"), name="run")
    rf.replay_checkpoints(storage, record.path, {"format": 2}, record)
    return record


def test_a_checkpoint_commits_once_every_rank_reported_and_merges_their_files(storage):
    m = manager(storage)
    m.begin_attempt(1, world_size=2)
    assert m.on_report(1, 0, None, stage(storage, 1, 0, 1, {"b.bin": b"rank one"})) == []
    [entry] = m.on_report(0, 0, {"step": 0}, stage(storage, 1, 0, 0, {"a.bin": b"zero"}))
    assert entry["name"] == "checkpoint_000001" and entry["metrics"] == {"step": 0}
    assert sorted(storage.listdir(m.path("checkpoint_000001"))) == ["a.bin", "b.bin"]
    assert entry["files"]["b.bin"]["rank"] == 1 and entry["files"]["b.bin"]["size"] == 8
    assert not storage.exists(storage.join("run", rf.staging_rel(1, 0)))
    assert [c["name"] for c in replayed(storage).checkpoints] == ["checkpoint_000001"]


def test_metrics_only_reports_hold_nothing_back(storage):
    m = manager(storage)
    m.begin_attempt(1, world_size=2)
    for i in range(1000):
        m.on_report(0, i, {"step": i}, None)
        m.on_report(1, i, None, None)
    assert not m._pending and not m._rank0


def test_a_checkpoint_waits_for_the_slowest_rank_whatever_order_the_ranks_report_in(storage):
    import random

    rng = random.Random(16)
    m = manager(storage)
    m.begin_attempt(1, world_size=3)
    made = [0, 0, 0]
    committed = []
    while min(made) < 4:
        rank = rng.choice([r for r in range(3) if made[r] < 4])
        index = made[rank]
        made[rank] += 1
        staged = stage(storage, 1, index, rank, {f"r{rank}.bin": bytes([rank])}) if index % 2 else None
        got = m.on_report(rank, index, {"step": index} if rank == 0 else None, staged)
        committed += [entry["name"] for entry in got]
        assert m._done == min(made) - 1  # the last report every rank has made, kept without a scan
        assert len(committed) == len([i for i in (1, 3) if i < min(made)])  # committed once all made it
    assert committed == ["checkpoint_000001", "checkpoint_000002"] and not m._rank0


def test_different_bytes_under_one_name_is_an_error_naming_path_and_ranks(storage):
    m = manager(storage)
    m.begin_attempt(1, world_size=3)
    m.on_report(0, 0, {}, stage(storage, 1, 0, 0, {"model.bin": b"aa", "same.txt": b"s"}))
    m.on_report(1, 0, None, stage(storage, 1, 0, 1, {"model.bin": b"bbb", "same.txt": b"s"}))
    with pytest.raises(CheckpointConflictError, match=r"model.bin \(rank 0: 2 bytes, rank 1: 3 bytes\)"):
        m.on_report(2, 0, None, stage(storage, 1, 0, 2, {"other.bin": b"c"}))
    assert m.checkpoints == [] and not storage.exists(storage.join("run", rf.STAGING, "attempt_1_report_0"))


def test_moved_files_of_one_name_and_size_are_hashed_by_the_driver_to_tell_them_apart(tmp_path):
    """A rank that moves its files into the staging (delete_local_checkpoint_after_upload) sends no hashes:
    the driver hashes a file only when another rank staged one of the same name and size."""
    import hashlib
    import os

    storage = Storage(str(tmp_path / "results"))
    storage.makedirs(storage.join("run"))

    def moved(index, rank, files):
        src = tmp_path / f"ckpt_{index}_{rank}"
        src.mkdir()
        for name, data in files.items():
            (src / name).write_bytes(data)
        dest = storage.join("run", rf.staging_rel(1, index, rank))
        return {"staging": dest, "files": storage.upload_dir(str(src), dest, consume=True), "rank": rank}

    m = manager(storage)
    m.begin_attempt(1, world_size=2)
    first = moved(0, 0, {"model.bin": b"same", "r0.bin": b"zero"})
    assert all("sha256" not in info for info in first["files"].values())  # moved: never read
    m.on_report(0, 0, {}, first)
    [entry] = m.on_report(1, 0, None, moved(0, 1, {"model.bin": b"same", "r1.bin": b"one"}))
    assert entry["files"]["model.bin"]["sha256"] == hashlib.sha256(b"same").hexdigest()  # compared, recorded
    assert "sha256" not in entry["files"]["r0.bin"]  # one rank's own file: nothing to compare
    with open(os.path.join(m.path(entry["name"]), "model.bin"), "rb") as f:
        assert f.read() == b"same"
    m.on_report(0, 1, {}, moved(1, 0, {"model.bin": b"aaaa"}))
    with pytest.raises(CheckpointConflictError, match=r"model.bin \(rank 0: 4 bytes, rank 1: 4 bytes\)"):
        m.on_report(1, 1, None, moved(1, 1, {"model.bin": b"bbbb"}))  # same size, other bytes
    assert [c["name"] for c in m.checkpoints] == ["checkpoint_000001"]


def test_retention_keeps_the_best_and_the_latest_and_journals_removals(storage, caplog):
    m = manager(storage, num_to_keep=2, checkpoint_score_attribute="score")
    m.begin_attempt(1, world_size=1)
    with caplog.at_level(logging.WARNING, logger="rafter"):
        for i, score in enumerate([0.5, None, 0.9, math.nan, 0.1]):
            metrics = {"step": i} if score is None else {"step": i, "score": score}
            m.on_report(0, i, metrics, stage(storage, 1, i, 0, {"w": b"x"}))
    warned = [r.getMessage() for r in caplog.records if "checkpoint_score_attribute='score'" in r.getMessage()]
    assert len(warned) == 1 and "checkpoint_000002 was reported with score='missing'" in warned[0]
    assert [c["name"] for c in m.checkpoints] == ["checkpoint_000003", "checkpoint_000005"]
    assert [c["name"] for c in replayed(storage).checkpoints] == ["checkpoint_000003", "checkpoint_000005"]
    ranked = rf.rank_checkpoints([{"number": 1, "metrics": {}}, {"number": 2, "metrics": {"score": 0.0}},
                                  {"number": 3, "metrics": {"score": math.nan}}], "score")
    assert [c["number"] for c in ranked] == [2, 3, 1]  # unscored (missing, NaN) never above a scored one


def test_verify_drops_a_damaged_latest_and_says_what_is_missing(storage, caplog):
    m = manager(storage)
    m.begin_attempt(1, world_size=1)
    for i in range(3):
        m.on_report(0, i, {"step": i}, stage(storage, 1, i, 0, {"a": b"1", "b": b"22"}))
    storage.remove(storage.join_path(m.path("checkpoint_000003"), "b"))
    with storage.fs.open(storage.join_path(m.path("checkpoint_000002"), "a"), "wb") as f:
        f.write(b"truncated? no: longer")
    with caplog.at_level(logging.WARNING, logger="rafter"):
        assert m.verify_latest()["name"] == "checkpoint_000001"
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint_000003 is damaged (b is missing)" in text
    assert "checkpoint_000002 is damaged (a has 21 bytes, 1 were committed)" in text
    record = replayed(storage)
    assert [c["name"] for c in record.checkpoints] == ["checkpoint_000001"] and record.next_number == 4
    assert sorted(record.dropped) == ["checkpoint_000002", "checkpoint_000003"]


def test_a_torn_journal_line_is_skipped_and_the_next_append_starts_a_new_line(storage):
    path = storage.join("run", rf.CHECKPOINTS_FILE)
    with storage.fs.open(path, "wb") as f:
        f.write(b'{"op": "commit", "name": "checkpoint_000001", "number": 1, "metrics": {}}\n{"op": "comm')
    Appender(storage, path).append(rf.dumps_line({"op": "commit", "name": "checkpoint_000002", "number": 2}))
    assert [c["name"] for c in replayed(storage).checkpoints] == ["checkpoint_000001", "checkpoint_000002"]


def test_default_run_names_differ_even_in_the_same_second():
    assert len({RunConfig().name for _ in range(50)}) == 50


def test_a_live_remote_lease_refuses_a_second_driver_and_an_expired_one_is_taken_over(storage, caplog):
    run = storage.join("run")
    first = _run_lock.hold(storage, run)
    try:
        with pytest.raises(_run_lock.RunFolderInUseError, match=r"in use by driver pid \d+ on host .*lease runs"):
            _run_lock.RemoteLease(storage, run).acquire()
    finally:
        first._stop.set()
        first._thread.join()  # the first driver "dies": its lease is no longer renewed
    first.me["expires"] = 0
    storage.write_text_atomic(storage.join_path(run, rf.LOCK_FILE), rf.dumps_line(dict(first.me, expires=1.0)))
    with caplog.at_level(logging.WARNING, logger="rafter"):
        second = _run_lock.hold(storage, run)
    assert f"taking over run folder {run} from driver pid" in caplog.text and "whose lease expired" in caplog.text
    second.release()
    assert not storage.exists(storage.join_path(run, rf.LOCK_FILE))


def test_a_second_owner_in_the_same_process_is_refused_and_a_released_folder_is_free(tmp_path):
    storage = Storage(str(tmp_path))
    run = storage.join("run")
    storage.makedirs(run)
    first = _run_lock.hold(storage, run)
    with pytest.raises(_run_lock.RunFolderInUseError, match=r"in use by driver pid \d+ .*\(in this same process\)"):
        _run_lock.hold(storage, run)
    probe = "import fcntl, os, sys; fcntl.lockf(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    other = subprocess.run([sys.executable, "-c", probe, storage.join_path(run, rf.LOCK_FILE)], capture_output=True)
    assert other.returncode != 0 and b"BlockingIOError" in other.stderr  # the refusal kept the first owner's lock
    first.release()
    assert not storage.exists(storage.join_path(run, rf.LOCK_FILE))
    _run_lock.hold(storage, run).release()


def test_a_format_1_run_folder_is_read_and_carried_into_the_journal(tmp_path):
    import json

    from rafter._controller.run_state import RunState

    run = tmp_path / "old"
    (run / "checkpoint_000002").mkdir(parents=True)
    (run / "checkpoint_000002" / "w.pt").write_bytes(b"w")
    (run / "rafter_run.json").write_text(json.dumps({
        "format": 1, "name": "old", "status": "finished", "next_number": 3, "attempts": [{"attempt": 1}],
        "checkpoints": [{"name": "checkpoint_000002", "number": 2, "metrics": {"step": 1}}]}))
    assert [c["name"] for c in rf.read(str(run)).checkpoints] == ["checkpoint_000002"]
    state = RunState.open(RunConfig(name="old", storage_path=str(tmp_path)), fingerprint={})
    try:
        assert state.latest_checkpoint_path == str(run / "checkpoint_000002") and state.next_number == 3
    finally:
        state.close()
    record = rf.read(str(run))
    assert [c["name"] for c in record.checkpoints] == ["checkpoint_000002"] and record.invocations[-1]["invocation"] == 1
    assert '"name": "checkpoint_000002"' in (run / rf.CHECKPOINTS_FILE).read_text()
