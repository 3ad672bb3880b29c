"""bench/throughput.py and bench/gpu_check.py stay runnable (tiny settings; the numbers are not checked)."""

import os
import subprocess
import sys

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")


def _run(args, tmp_path, timeout=180):
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_throughput_quick_prints_the_table(tmp_path):
    out = _run([os.path.join(BENCH, "throughput.py"), "--quick", "--workloads", "mlp", "--steps", "20",
                "--report-calls", "2000"], tmp_path)
    assert "| mlp | " in out and "| worker CPU time | " in out and "| mlp USS | " in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, gpu_check runs the real check (minutes)")
def test_gpu_check_skips_cleanly_without_a_gpu(tmp_path):
    assert "skipped" in _run([os.path.join(BENCH, "gpu_check.py")], tmp_path)
