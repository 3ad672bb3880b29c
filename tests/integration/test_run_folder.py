"""Run folders you can trust, with real drivers and workers: one owner, verified checkpoints, journals that
survive torn lines, a folder others cannot tamper with, and invocations told apart from restarts."""

import json
import logging
import math
import os
import selectors
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import rafter.train as train
from rafter import _run_folder
from rafter.train import Checkpoint, Result, RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer
from tests.subprocesses import read_until

DRIVER = textwrap.dedent(
    """
    import os, sys, tempfile, time, torch
    from rafter import train
    from rafter.train import Checkpoint, RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    def train_func(config):
        for step in range(4):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "s.txt"), "w") as f:
                    f.write(f"{step} {os.getppid()}")
                train.report({"step": step, "driver": config["driver"]}, checkpoint=Checkpoint.from_directory(d))
            if train.get_context().get_world_rank() == 0:
                print("STEP", step, flush=True)
            if step == 1 and config["release"]:
                deadline = time.monotonic() + 60  # hold here until the test lets this driver go on
                while not os.path.exists(config["release"]) and time.monotonic() < deadline:
                    time.sleep(0.02)
        torch.distributed.barrier()
        return "done"

    storage, driver, release = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else "")
    print("PID", os.getpid(), flush=True)
    r = TorchTrainer(train_func, train_loop_config={"driver": driver, "release": release},
                     scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name="shared", storage_path=storage)).fit()
    print("FINAL", r.metrics["step"], flush=True)
    """
)


def _driver(tmp_path, name, release=None):
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    args = [sys.executable, str(script), str(tmp_path / "results"), name] + ([str(release)] if release else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _one_clean_run(run):
    """The run folder holds one driver's run: each step once, from one driver, and its checkpoints intact."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    drivers = {r["driver"] for r in rows}
    assert len(drivers) == 1
    record = _run_folder.read(str(run))
    names = sorted(n for n in os.listdir(run) if n.startswith("checkpoint_"))
    assert names == [c["name"] for c in record.checkpoints] == [f"checkpoint_00000{i}" for i in range(1, 5)]
    assert record.status == "finished"
    return drivers.pop()


def test_a_second_driver_started_while_the_first_runs_stops_before_touching_anything(tmp_path):
    release = tmp_path / "release"
    first = _driver(tmp_path, "first", release)
    first_pid = int(read_until(first, "STEP 1").split("PID", 1)[1].split()[0])
    lock = tmp_path / "results" / "shared" / ".rafter_lock"
    try:
        second = _driver(tmp_path, "second")
        out, err = second.communicate(timeout=120)
        assert second.returncode != 0
        assert f"is in use by driver pid {first_pid} on host" in err.decode(), err.decode()
        assert "RunConfig(name=...)" in err.decode() and f"kill {first_pid}" in err.decode()
        assert json.loads(lock.read_text())["pid"] == first_pid
        shown = subprocess.run([sys.executable, "-m", "rafter", "results", str(lock.parent)], capture_output=True,
                               text=True)
        assert f"driver:       running: driver pid {first_pid} on host" in shown.stdout, shown.stdout + shown.stderr
    finally:
        release.touch()
        rest, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and b"FINAL 3" in rest
    assert _one_clean_run(tmp_path / "results" / "shared") == "first"
    assert not lock.exists()


def test_two_drivers_started_at_once_one_runs_and_the_other_names_it(tmp_path):
    release = tmp_path / "release"
    a, b = _driver(tmp_path, "a", release), _driver(tmp_path, "b", release)
    procs = {"a": a, "b": b}
    sel = selectors.DefaultSelector()
    for p in procs.values():
        sel.register(p.stderr, selectors.EVENT_READ)
    loser = None
    deadline = time.monotonic() + 120
    try:
        while loser is None:  # the loser exits early; the winner holds at step 1 until released
            assert time.monotonic() < deadline
            for name, p in procs.items():
                if p.poll() is not None:
                    loser = name
            sel.select(timeout=0.2)
        winner = "b" if loser == "a" else "a"
        err = procs[loser].stderr.read().decode()
        winner_pid = int(read_until(procs[winner], "STEP 1").split("PID", 1)[1].split()[0])
        assert procs[loser].returncode != 0 and f"is in use by driver pid {winner_pid}" in err, err
    finally:
        release.touch()
        for p in procs.values():
            p.communicate(timeout=120)
    assert procs[winner].returncode == 0
    assert _one_clean_run(tmp_path / "results" / "shared") == winner
    sel.close()


# -- checkpoints from several ranks -----------------------------------------------------------------
def same_name_from_every_rank(config):
    rank = train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "model.bin"), "wb") as f:
            f.write(b"same" if config["same"] else bytes([rank]) * (10 + rank))
        train.report({"step": 0}, checkpoint=Checkpoint.from_directory(d))
    _all_joined()


def _all_joined():
    """No rank returns before every rank has joined the process group (gloo's mesh would see it leave)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _fit(fn, tmp_path, n=2, config=None, name="run", **run):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n),
                        run_config=RunConfig(name=name, storage_path=str(tmp_path / "results"), **run)).fit()


def test_three_ranks_writing_one_name_with_different_bytes_is_an_error_naming_it(tmp_path):
    with pytest.raises(TrainingFailedError) as info:
        _fit(same_name_from_every_rank, tmp_path, n=3, config={"same": False})
    message = str(info.value)
    assert "model.bin (rank 0: 10 bytes, rank 1: 11 bytes)" in message and "rank 2: 12 bytes" in message
    assert info.value.kind == "checkpoint"
    run = tmp_path / "results" / "run"
    assert not [n for n in os.listdir(run) if n.startswith("checkpoint_")] and not (run / ".staging").exists()
    assert _run_folder.read(str(run)).status == "failed"


def test_three_ranks_writing_identical_files_commit_one_copy(tmp_path):
    result = _fit(same_name_from_every_rank, tmp_path, n=3, config={"same": True})
    with result.checkpoint.as_directory() as d:
        assert os.listdir(d) == ["model.bin"] and open(os.path.join(d, "model.bin"), "rb").read() == b"same"


def uneven_reports(config):
    rank = train.get_context().get_world_rank()
    for step in range(3 if rank == 0 else 2):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, f"rank{rank}.txt"), "w") as f:
                f.write(str(step))
            train.report({"step": step}, checkpoint=Checkpoint.from_directory(d))
    _all_joined()


def test_a_checkpoint_only_some_ranks_reported_is_named_and_result_stays_consistent(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rafter"):
        result = _fit(uneven_reports, tmp_path)
    warning = [r.getMessage() for r in caplog.records if "was never reported by" in r.getMessage()]
    assert warning and "report 3's checkpoint (from rank 0) was never reported by rank 1" in warning[0]
    assert "rank 0: 3, rank 1: 2" in warning[0]
    assert result.metrics == {"step": 2} and result.best_checkpoints[-1][1] == result.metrics
    assert result.checkpoint.path.endswith("checkpoint_000003")
    with result.checkpoint.as_directory() as d:
        assert os.listdir(d) == ["rank0.txt"] and open(os.path.join(d, "rank0.txt")).read() == "2"
    assert Result.from_path(result.path).checkpoint == result.checkpoint


# -- resume verifies the checkpoint ----------------------------------------------------------------
def resumes(config):
    ckpt = train.get_checkpoint()
    start = 0
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(open(os.path.join(d, "a.txt")).read()) + 1
    for step in range(start, config["stop"]):
        with tempfile.TemporaryDirectory() as d:
            for part in ("a", "b"):
                with open(os.path.join(d, f"{part}.txt"), "w") as f:
                    f.write(str(step))
            train.report({"step": step}, checkpoint=Checkpoint.from_directory(d)
                         if train.get_context().get_world_rank() == 0 else None)
    _all_joined()
    return start


def test_a_deleted_checkpoint_file_is_found_and_resume_falls_back_to_the_newest_intact(tmp_path, caplog):
    _fit(resumes, tmp_path, config={"stop": 3})
    run = tmp_path / "results" / "run"
    os.remove(run / "checkpoint_000003" / "b.txt")
    with caplog.at_level(logging.WARNING, logger="rafter"):
        result = _fit(resumes, tmp_path, config={"stop": 5})
    warning = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert warning and "checkpoint_000003 is damaged (b.txt is missing)" in warning[0]
    assert "resuming from checkpoint_000002 instead" in warning[0]
    assert result.return_value == 2  # started after checkpoint 2, not from the damaged 3
    assert [c.path.rsplit("/", 1)[-1] for c, _ in result.best_checkpoints] == [
        "checkpoint_000001", "checkpoint_000002", "checkpoint_000004", "checkpoint_000005", "checkpoint_000006"]
    assert (run / "checkpoint_000003").exists()  # left for inspection


def test_a_torn_line_in_either_journal_is_skipped_and_hides_nothing_after_it(tmp_path):
    _fit(resumes, tmp_path, config={"stop": 2})
    run = tmp_path / "results" / "run"
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "tor')  # a driver died mid-write
    with open(run / "checkpoints.jsonl", "a") as f:
        f.write('{"op": "commit", "name": "checkpoint_0000')
    result = _fit(resumes, tmp_path, config={"stop": 4})
    assert [m["step"] for m in result.metrics_history] == [0, 1, 2, 3]
    assert result.return_value == 2 and result.checkpoint.path.endswith("checkpoint_000004")
    again = Result.from_path(result.path)
    assert [m["step"] for m in again.metrics_history] == [0, 1, 2, 3]
    assert [c.path.rsplit("/", 1)[-1] for c, _ in again.best_checkpoints][-1] == "checkpoint_000004"


# -- a folder others cannot tamper with -------------------------------------------------------------
def one_report(config):
    train.report({"x": 1.0, "nan": math.nan, "inf": -math.inf, "nested": [math.inf]})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another uid")
def test_a_logs_folder_precreated_by_another_user_is_refused(tmp_path):
    logs = tmp_path / "results" / "run" / "logs"
    logs.mkdir(parents=True)
    os.chown(logs, 12345, 12345)
    with pytest.raises(ValueError, match=r"logs is owned by uid 12345, not by you \(uid 0\).*refuses") as info:
        _fit(one_report, tmp_path, n=1)
    assert info.value.path == str(logs) and "chmod" in info.value.fix or "storage_path" in info.value.fix
    assert os.listdir(logs.parent) == ["logs"]  # nothing written, nothing loaded from there


def test_a_group_writable_run_folder_is_refused(tmp_path):
    run = tmp_path / "results" / "run"
    run.mkdir(parents=True)
    os.chmod(run, 0o775)
    with pytest.raises(ValueError, match=r"is writable by group \(mode drwxrwxr-x\)"):
        _fit(one_report, tmp_path, n=1)
    assert os.listdir(run) == []


@pytest.mark.parametrize("planted", ["metrics.jsonl", "logs/rank_0.log"])
def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path, planted):
    _fit(one_report, tmp_path, n=1)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "results" / "run" / planted
    link.unlink()
    link.symlink_to(victim)
    with pytest.raises(Exception, match=f"{link} is a symbolic link .*rafter does not follow links"):
        _fit(one_report, tmp_path, n=1)
    assert victim.read_text() == "precious"


def test_nan_and_inf_metrics_are_valid_json_and_read_back_as_floats(tmp_path):
    result = _fit(one_report, tmp_path, n=1)
    line = (tmp_path / "results" / "run" / "metrics.jsonl").read_text().splitlines()[0]
    json.loads(line, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    for metrics in (result.metrics, Result.from_path(result.path).metrics_history[0]):
        assert math.isnan(metrics["nan"]) and metrics["inf"] == -math.inf and metrics["nested"] == [math.inf]


def test_nothing_of_an_attempt_is_left_after_success_but_the_listed_files(tmp_path):
    _fit(resumes, tmp_path, config={"stop": 1})
    run = tmp_path / "results" / "run"
    (run / "rafter_run.json.tmp-99999").write_text('{"format": 2, "status": "runn')  # a driver died mid-write
    (run / ".staging" / "attempt_1_report_7" / "rank_0").mkdir(parents=True)
    result = _fit(resumes, tmp_path, config={"stop": 2})
    listed = {"rafter_run.json", "checkpoints.jsonl", "metrics.jsonl", "logs", "checkpoint_000001", "checkpoint_000002"}
    assert set(os.listdir(result.path)) == listed
    assert all(n.startswith(("rank_", "stacks_rank_", "collectives_rank_")) for n in os.listdir(os.path.join(result.path, "logs")))


# -- invocations ------------------------------------------------------------------------------------
def test_running_a_finished_run_again_is_a_new_invocation_not_a_failed_attempt(tmp_path):
    _fit(resumes, tmp_path, config={"stop": 2})
    result = _fit(resumes, tmp_path, config={"stop": 3})
    assert [(a["attempt"], a["invocation"], a["cause"], a["error"]) for a in result.attempts] == [
        (1, 1, "start", None), (2, 2, "new invocation", None)]
    proc = subprocess.run([sys.executable, "-m", "rafter", "results", result.path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "✓ finished: 3 reports, 2 attempts in 2 invocations" in proc.stdout
    assert "invocation 1: finished\n    attempt 1 (first start), from report 0: ok" in proc.stdout
    assert "invocation 2: finished\n    attempt 2 (driver run again), from report 2: ok" in proc.stdout


def test_results_of_a_corrupt_state_file_is_one_clear_error(tmp_path):
    run = tmp_path / "results" / "run"
    run.mkdir(parents=True)
    (run / "rafter_run.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "rafter", "results", str(run)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"rafter: {run}/rafter_run.json is not valid JSON" in proc.stderr and "  fix: move that folder" in proc.stderr
    (run / "rafter_run.json").write_text('["a list"]')
    with pytest.raises(ValueError, match="not a rafter state file"):
        _fit(one_report, tmp_path, n=1)


def test_a_log_folder_that_is_not_a_folder_is_one_clear_error(tmp_path):
    run = tmp_path / "results" / "run"
    run.mkdir(parents=True)
    (run / "logs").write_text("a file where the logs go")
    with pytest.raises(ValueError, match=r"The log folder .*logs is not a folder; .*Fix: remove it"):
        _fit(one_report, tmp_path, n=1)
    assert sorted(os.listdir(run)) == ["logs"]


def test_results_with_a_missing_checkpoint_folder_warns_and_shows_the_rest(tmp_path):
    result = _fit(resumes, tmp_path, config={"stop": 3})
    import shutil

    shutil.rmtree(os.path.join(result.path, "checkpoint_000003"))
    proc = subprocess.run([sys.executable, "-m", "rafter", "results", result.path], capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "lists checkpoint checkpoint_000003, which is missing from the folder" in proc.stderr
    assert f"checkpoint:   {result.path}/checkpoint_000002  (2 kept)" in proc.stdout
