"""``rafter check`` (preflight without training) and ``rafter results`` (a past run)."""

import json
import re

from rafter.train import RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer
from tests.cli import train_funcs
from tests.cli.conftest import FUNCS, rafter


def test_check_a_good_job_with_a_real_all_reduce(tmp_path, write):
    job = write("job.yaml", f"train: {FUNCS}:steps\ncluster: local\nscaling: {{num_workers: 3}}\n"
                            f"run: {{storage_path: {tmp_path / 'store'}}}\n")
    proc = rafter("check", job, "--collective")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "✓ job file" in out and "(3 workers, cluster local)" in out
    assert "✓ train function" in out and "imports and pickles" in out
    assert "✓ CPUs" in out or "! CPUs" in out
    assert re.search(r"✓ GPUs +none asked", out)
    assert re.search(rf"✓ storage +{tmp_path / 'store'} is writable", out)
    assert "✓ torch" in out and "process-group backend gloo is available" in out
    assert re.search(r"✓ all-reduce +3 workers \(gloo, cpu\): sum of ranks\+1 = 6, expected 6", out)
    assert "✗" not in out and "All checks passed." in out
    assert not (tmp_path / "store").exists()  # the probe left nothing behind, not even the folder


def test_check_reports_every_problem_and_exits_1(tmp_path, write):
    (tmp_path / "a_file").write_text("not a folder")
    write("locked.py", "import threading\nLOCK = threading.Lock()\n"
                       "def f(config):\n    with LOCK:\n        pass\n")
    job = write("job.yaml", f"train: locked.py:f\ncluster: local\nscaling: {{num_workers: 512, use_gpu: true}}\n"
                            f"run: {{storage_path: {tmp_path / 'a_file' / 'results'}}}\n")
    proc = rafter("check", job)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "✗ train function" in out and "can't be pickled" in out and "LOCK" in out
    assert re.search(r"✗ GPUs +512 GPUs asked; this machine has", out)
    assert "✗ storage" in out and "is not writable" in out and "run.storage_path" in out
    assert "problem(s) found" in out


def test_results_of_a_finished_and_of_a_failed_run(tmp_path):
    ok = TorchTrainer(
        train_funcs.with_checkpoints, train_loop_config={"steps": 3}, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="ok", storage_path=str(tmp_path)),
    ).fit()
    proc = rafter("results", ok.path)
    assert proc.returncode == 0, proc.stderr
    assert "✓ finished: 3 reports, 1 attempt" in proc.stdout
    assert "last metrics: step=2 loss=0.3333" in proc.stdout
    assert f"checkpoint:   {ok.path}/checkpoint_000003  (3 kept)" in proc.stdout
    assert "checkpoint_000001  step=0 loss=1" in proc.stdout
    doc = json.loads(rafter("results", ok.path, "--json").stdout)
    assert doc["status"] == "finished" and doc["num_reports"] == 3 and doc["checkpoint"].endswith("checkpoint_000003")

    try:
        TorchTrainer(train_funcs.fails_on_rank_1, scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name="bad", storage_path=str(tmp_path))).fit()
    except TrainingFailedError:
        pass
    proc = rafter("results", tmp_path / "bad")
    assert proc.returncode == 1
    assert "✗ failed (1 report, 1 attempt)" in proc.stdout and "rank 1" in proc.stdout
    assert "ValueError: rank 1 gives up on purpose" in proc.stdout

    proc = rafter("results", tmp_path / "nothing_here")
    assert proc.returncode == 2 and "is not a rafter run folder" in proc.stderr


def test_check_on_ray_without_a_reachable_cluster_is_a_problem(tmp_path, write):
    job = write("job.yaml", f"train: {FUNCS}:steps\ncluster: ray\naddress: 127.0.0.1:1\n"
                            f"run: {{storage_path: {tmp_path}}}\n")
    proc = rafter("check", job, env={"RAY_ADDRESS": ""})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ("✗ Ray" in proc.stdout and ("pip install 'rafter-train[ray]'" in proc.stdout
                                        or "can't connect to the Ray cluster at 127.0.0.1:1" in proc.stdout))
