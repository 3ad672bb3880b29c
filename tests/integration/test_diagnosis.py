"""Every failure rafter claims to diagnose, produced for real; assertions on the verdict's text."""

import ctypes
import os
import pickle
import signal
import sys
import threading
import time

import psutil
import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter.train import RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer
from tests.integration.cgroups import own_memory_cgroup, small_cgroup


def run(fn, n, tmp_path, config=None, resources=None, **run_kwargs):
    t = TorchTrainer(fn, train_loop_config=config,
                     scaling_config=ScalingConfig(num_workers=n, resources_per_worker=resources),
                     run_config=RunConfig(name="diag", storage_path=str(tmp_path), **run_kwargs))
    with pytest.raises(TrainingFailedError) as info:
        t.fit()
    return info.value


def _step_then(fault_rank, fault):
    rank = train.get_context().get_world_rank()
    t = torch.ones(1)
    for step in range(3):
        dist.all_reduce(t)
        train.report({"step": step})
    if rank == fault_rank:
        fault()
    dist.all_reduce(t)  # the others block here until the fault reaches them
    dist.all_reduce(t)


def raise_on_rank_2():
    def fault():
        raise KeyError("missing column 'label'")
    _step_then(2, fault)


def test_exception_on_rank_2_of_4_is_the_root_cause(tmp_path):
    err = run(raise_on_rank_2, 4, tmp_path)
    first = err.first_line
    assert first.startswith("Rank 2 (pid ") and "raised KeyError: \"missing column 'label'\"" in first
    assert "at report 3" in first and "s into the run" in first
    assert err.kind == "exception" and err.rank == 2
    consequences = str(err).split("Consequences", 1)[1]
    assert "ranks 0, 1, 3: lost the connection to a failed peer" in consequences
    assert "Likely fix:" in str(err) and "Full logs:" in str(err)
    ranks = [f["rank"] for f in err.failures]
    assert ranks[0] == 2 and sorted(ranks) == [0, 1, 2, 3]
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.rank == 2 and clone.kind == "exception"


def sigkill_rank_1():
    _step_then(1, lambda: os.kill(os.getpid(), signal.SIGKILL))


def test_sigkill_is_named_not_a_connection_error(tmp_path):
    err = run(sigkill_rank_1, 2, tmp_path)
    assert err.first_line.startswith("Rank 1 (pid ") and "was killed by SIGKILL" in err.first_line
    assert "Connection" not in err.first_line and "rafter did not send it" in str(err)
    assert err.kind == "signal" and err.evidence["signal"] == signal.SIGKILL


def segfault_rank_0():
    _step_then(0, lambda: ctypes.string_at(0))


def test_segfault_is_a_native_crash_with_its_python_stack(tmp_path):
    err = run(segfault_rank_0, 2, tmp_path)
    assert err.first_line.startswith("Rank 0 (pid ") and "crashed with SIGSEGV in native code" in err.first_line
    text = str(err)
    assert "Fatal Python error: Segmentation fault" in text
    assert "segfault_rank_0" in text and "string_at" in text  # the Python stack at the crash
    assert err.kind == "crash"


def exits_with_code():
    _step_then(1, lambda: sys.exit(3))


def os_exits():
    _step_then(1, lambda: os._exit(4))


def test_sys_exit_and_os_exit_are_named_with_their_codes(tmp_path):
    err = run(exits_with_code, 2, tmp_path / "a")
    assert "Rank 1" in err.first_line and "called sys.exit(3)" in err.first_line and err.kind == "exit"
    err = run(os_exits, 2, tmp_path / "b")
    assert "Rank 1" in err.first_line and "exited with code 4" in err.first_line and err.kind == "exit"


def allocate_past_limit():
    def fault():
        hoard = []
        for _ in range(40):  # up to 4 GiB, 100 MiB at a time; rafter stops it long before
            hoard.append(torch.ones(25 * 2**20))
        raise AssertionError("rafter did not stop a worker over its memory limit")
    _step_then(1, fault)


def test_memory_over_the_per_worker_limit_is_out_of_memory(tmp_path):
    limit = 1_500 * 2**20
    err = run(allocate_past_limit, 2, tmp_path, resources={"memory": limit})
    assert err.first_line.startswith("Rank 1 (pid ") and "ran out of memory" in err.first_line
    assert "over its limit of 1.46 GiB" in err.first_line
    assert err.kind == "oom" and err.evidence["oom"]["limit"] == limit
    assert err.evidence["oom"]["peak_rss"] > limit


def test_machine_memory_threshold_stops_the_largest_worker(tmp_path):
    vm = psutil.virtual_memory()
    used = 1 - vm.available / vm.total
    threshold = min(0.99, used + 1.2 * 2**30 / vm.total)  # about 1.2 GiB above what is in use now
    err = run(allocate_past_limit, 2, tmp_path, memory_threshold=threshold)
    assert err.rank == 1 and err.kind == "oom"
    assert "the machine reached" in err.first_line and "largest worker" in err.first_line


def oom_in_cgroup(config):
    def fault():
        with open(os.path.join(config["cgroup"], "tasks"), "w") as f:
            f.write(str(os.getpid()))
        hoard = []
        for _ in range(40):
            hoard.append(torch.ones(25 * 2**20))
        raise AssertionError("the kernel did not OOM-kill a worker over its cgroup limit")
    _step_then(1, fault)


@pytest.mark.skipif(own_memory_cgroup() is None, reason="needs a writable cgroup-v1 memory controller")
def test_kernel_oom_kill_is_called_that(tmp_path):
    with small_cgroup("rafter-test") as cg:
        err = run(oom_in_cgroup, 2, tmp_path, config={"cgroup": cg})
    assert err.first_line.startswith("Rank 1 (pid ") and "killed by the kernel OOM killer" in err.first_line
    assert err.kind == "oom" and err.evidence["oom"]["source"] == "kernel"


def rank_3_sleeps():
    rank = train.get_context().get_world_rank()
    t = torch.ones(1)
    for step in range(2):
        dist.all_reduce(t)
        train.report({"step": step})
    if rank == 3:
        threading.Event().wait()  # never joins the next all_reduce
    dist.all_reduce(t)


def test_hang_dumps_every_stack_and_singles_out_the_rank_that_is_elsewhere(tmp_path):
    err = run(rank_3_sleeps, 4, tmp_path, hang_timeout_s=5)
    first = err.first_line
    assert first.startswith("Rank 3 (pid ") and "hung: no progress for" in first
    assert "rank_3_sleeps" in first and "threading.Event().wait()" in first
    assert "ranks 0, 1, 2 wait in all_reduce" in first
    text = str(err)
    for r in range(4):
        assert f"--- rank {r} ---" in text
    assert err.kind == "hang" and err.rank == 3
    assert set(err.evidence["hang"]["locations"]) == {0, 1, 2, 3}


def test_unpicklable_config_names_each_path(tmp_path):
    class Loader:
        def __init__(self):
            self.file = open(__file__, "rb")

    class Data:
        def __init__(self):
            self.loader = Loader()

    config = {"lock": threading.Lock(), "data": Data(), "gen": (i for i in range(3)), "lr": 0.1}
    t = TorchTrainer(lambda c: None, train_loop_config=config, scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name="ser", storage_path=str(tmp_path)))
    before = psutil.Process().children(recursive=True)
    with pytest.raises(TypeError) as info:
        t.fit()
    message = str(info.value)
    assert "train_loop_config['lock']: _thread.lock" in message
    assert "train_loop_config['data'].loader.file: _io.BufferedReader" in message
    assert "train_loop_config['gen']: generator" in message
    assert "lr" not in message.split("Fix:")[0]
    assert "create these objects inside the train function" in message
    config["data"].loader.file.close()
    assert psutil.Process().children(recursive=True) == before  # failed before any process started


def reports_a_big_tensor():
    train.report({"loss": 1.0, "weights": torch.ones(3, 3)})


def test_metric_that_is_a_big_tensor_names_the_key(tmp_path):
    err = run(reports_a_big_tensor, 1, tmp_path)
    assert "metric 'weights' is a tensor of shape (3, 3)" in err.first_line


def dies_and_records(config):
    if train.get_context().get_world_rank() == 1:
        with open(config["stamp"], "w") as f:
            f.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
    t = torch.ones(1)
    dist.all_reduce(t)


def test_detection_latency_from_death_to_fit_raising(tmp_path):
    stamp = tmp_path / "death"
    err = run(dies_and_records, 2, tmp_path, config={"stamp": str(stamp)})
    latency = time.time() - float(stamp.read_text())
    assert "killed by SIGKILL" in err.first_line
    assert latency < 3.0, f"{latency:.2f} s from the worker's death to fit() raising (bench/diagnose.py has the figure)"


def test_a_traceback_from_a_script_sent_by_value_shows_its_file_and_lines(tmp_path):
    """Scripts, job files and notebook cells travel by value; their tracebacks keep file name and source."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "by_value_train.py").write_text(
        "def train_func():\n"
        "    rows = [1, 2]\n"
        "    return rows[5]  # off the end\n")
    sys.path.insert(0, str(folder))
    try:
        import by_value_train
    finally:
        sys.path.remove(str(folder))
    err = run(by_value_train.train_func, 1, tmp_path)
    assert "raised IndexError: list index out of range" in err.first_line
    text = str(err)
    assert f'File "{folder / "by_value_train.py"}", line 3, in train_func' in text
    assert "return rows[5]  # off the end" in text and "<dynamic-code>" not in text


class _BadSample(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise ValueError(f"sample {i} has no 'label' field")
        return torch.ones(2)


def loads_a_bad_sample():
    for batch in torch.utils.data.DataLoader(_BadSample(), batch_size=1, num_workers=1):
        train.report({"x": float(batch.sum())})


def test_an_exception_in_a_dataloader_worker_shows_its_own_message_first(tmp_path):
    err = run(loads_a_bad_sample, 1, tmp_path)
    assert err.first_line.startswith("Rank 0 (pid ")
    assert "raised ValueError in DataLoader worker process 0: sample 5 has no 'label' field" in err.first_line
    assert "at report 5" in err.first_line


class _HoardsInCgroup(torch.utils.data.Dataset):
    def __init__(self, cgroup):
        self.cgroup = cgroup

    def __len__(self):
        return 4

    def __getitem__(self, i):
        with open(os.path.join(self.cgroup, "tasks"), "w") as f:
            f.write(str(os.getpid()))  # only this DataLoader worker is in the small cgroup
        hoard = [torch.ones(25 * 2**20) for _ in range(40)]
        raise AssertionError(f"the kernel did not OOM-kill a DataLoader worker ({len(hoard)})")


def dataloader_worker_hoards(config):
    for batch in torch.utils.data.DataLoader(_HoardsInCgroup(config["cgroup"]), num_workers=1):
        train.report({"x": 1})


@pytest.mark.skipif(own_memory_cgroup() is None, reason="needs a writable cgroup-v1 memory controller")
def test_a_dataloader_worker_killed_by_the_kernel_oom_killer_is_out_of_memory(tmp_path):
    with small_cgroup("rafter-test-dl") as cg:
        err = run(dataloader_worker_hoards, 1, tmp_path, config={"cgroup": cg})
    first = err.first_line
    assert first.startswith("Rank 0 (pid ") and "ran out of memory: its DataLoader worker (pid " in first, first
    assert "killed by the kernel OOM killer" in first and err.kind == "oom"
    assert err.evidence["oom"]["source"] == "kernel"


def removes_its_checkpoint_before_report():
    import shutil
    import tempfile

    folder = tempfile.mkdtemp()
    torch.save({"w": torch.ones(2)}, os.path.join(folder, "model.pt"))
    checkpoint = train.Checkpoint.from_directory(folder)
    shutil.rmtree(folder)  # e.g. a TemporaryDirectory that closed before report()
    train.report({"loss": 1.0}, checkpoint=checkpoint)


def test_a_checkpoint_folder_that_vanished_before_report_is_a_worker_error_naming_it(tmp_path):
    err = run(removes_its_checkpoint_before_report, 2, tmp_path)
    first = err.first_line
    assert first.startswith("Rank 0 (pid ") or first.startswith("Rank 1 (pid "), first
    assert "FileNotFoundError: rafter.train.report(checkpoint=...): the checkpoint folder /" in first, first
    assert "does not exist (any more)" in first and err.kind == "exception"
    assert train.Result.from_path(str(tmp_path / "diag")).error is not None  # the run is not left "running"


def _tmpfs(path, size):
    import subprocess

    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def fills_the_disk(config):
    if train.get_context().get_world_rank() == 0:
        try:
            with open(os.path.join(config["disk"], "another_job's_file"), "wb") as f:
                while True:
                    f.write(b"x" * 2**16)
        except OSError as exc:
            raise RuntimeError(f"could not write the batch cache: {exc}") from None


def test_a_full_disk_while_rafter_records_the_failure_does_not_lose_the_verdict(tmp_path):
    import subprocess

    disk = tmp_path / "disk"
    if not _tmpfs(disk, "2m"):
        pytest.skip("needs permission to mount a small tmpfs")
    try:
        err = run(fills_the_disk, 1, disk, config={"disk": str(disk)})
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # the warm zygote may still hold a log
    assert err.first_line.startswith("Rank 0 (pid ") and "could not write the batch cache" in err.first_line
    assert "rafter could not record this failure in the run folder ([Errno 28] No space left" in str(err)
