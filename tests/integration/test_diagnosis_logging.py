"""Logging that respects the user: levels they set stand, worker echo can be turned off, workers get
OMP_NUM_THREADS for their CPU share. Each case runs a fresh driver (logging is process-wide state)."""

import json
import os
import subprocess
import sys
import textwrap

DRIVER = textwrap.dedent("""
    import json, logging, os, sys
    import torch
    from rafter.train import LoggingConfig, RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    mode, storage = sys.argv[1], sys.argv[2]
    if mode == "user-warning":
        logging.getLogger("rafter").setLevel(logging.WARNING)
    logging_config = {"config-warning": LoggingConfig(log_level="warning"),
                      "no-echo": LoggingConfig(echo_worker_output=False)}.get(mode)

    def train_func():
        print("hello from the worker", flush=True)
        return {"omp": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}

    for _ in range(2):  # the second fit() resumes the run, which rafter logs at INFO
        result = TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=1), run_config=RunConfig(
            name="logs", storage_path=storage, logging_config=logging_config)).fit()
    print("RESULT=" + json.dumps(result.return_value))
""")


def _drive(tmp_path, mode, **env):
    proc = subprocess.run([sys.executable, "-c", DRIVER, mode, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.split("RESULT=", 1)[1])
    return proc.stderr + proc.stdout, result


def test_the_default_prints_info_lines_and_worker_output(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, "default", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "[rafter] Resuming run 'logs'" in proc.stderr
    assert "[rank 0] hello from the worker" in proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("RESULT=", 1)[1])
    assert result["omp"] == str(result["torch_threads"])  # the worker's CPU share, not unset


def test_a_level_the_user_set_on_the_rafter_logger_stands(tmp_path):
    out, _ = _drive(tmp_path, "user-warning")
    assert "Resuming run" not in out and "hello from the worker" in out


def test_logging_config_sets_the_level(tmp_path):
    out, _ = _drive(tmp_path, "config-warning")
    assert "Resuming run" not in out


def test_worker_echo_turned_off_from_python_still_writes_the_rank_log(tmp_path):
    out, _ = _drive(tmp_path, "no-echo")
    assert "hello from the worker" not in out and "[rafter] Resuming run" in out
    logs = tmp_path / "logs" / "logs"
    texts = [p.read_text() for p in logs.rglob("rank_0*.log")]
    assert any("hello from the worker" in t for t in texts), sorted(p.name for p in logs.rglob("*"))


def test_omp_num_threads_the_user_set_stands(tmp_path):
    _, result = _drive(tmp_path, "default", OMP_NUM_THREADS="3")
    assert result["omp"] == "3"


def test_logging_config_rejects_an_unknown_level():
    import pytest

    from rafter.train import LoggingConfig

    with pytest.raises(ValueError, match=r"LoggingConfig\(log_level='LOUD'\): expected one of DEBUG, INFO"):
        LoggingConfig(log_level="LOUD")
    assert LoggingConfig(log_level="debug").log_level == "DEBUG"
