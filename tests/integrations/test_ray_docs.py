"""Ray Train's own Hugging Face and Lightning getting-started examples, imports renamed, run on rafter as scripts
(see the header of each file in ray_docs/ for the lines that changed)."""

import os
import subprocess
import sys

import pytest

from rafter.train import Result

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_docs")


def _run(script, tmp_path):
    # HOME is the test's folder: the examples use the default storage_path, ~/rafter_results
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, os.path.join(HERE, script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    (run,) = os.listdir(tmp_path / "rafter_results")
    return out.stdout, tmp_path / "rafter_results" / run


@pytest.mark.slow
def test_ray_transformers_getting_started_runs_on_rafter(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    stdout, run = _run("transformers_getting_started.py", tmp_path)
    assert "LOADED BertForSequenceClassification FROM " in stdout
    checkpoints = sorted(n for n in os.listdir(run) if n.startswith("checkpoint_"))
    assert len(checkpoints) == 3  # save_strategy="epoch", 3 epochs (the default)
    assert os.path.isfile(run / checkpoints[-1] / "checkpoint" / "model.safetensors")
    # eval_strategy == save_strategy == "epoch": each checkpoint's metrics hold that epoch's evaluation
    result = Result.from_path(str(run))
    got = [m["epoch"] for _c, m in result.best_checkpoints]
    assert sorted(got) == [1.0, 2.0, 3.0]
    assert all("eval_accuracy" in m and "eval_loss" in m for _c, m in result.best_checkpoints)
    assert "train_runtime" in result.metrics  # the last report: train()'s summary


@pytest.mark.slow
def test_ray_lightning_getting_started_runs_on_rafter(tmp_path):
    pytest.importorskip("lightning")
    stdout, run = _run("lightning_getting_started.py", tmp_path)
    assert "LOADED ImageClassifier EPOCHS [0, 1]" in stdout
    checkpoints = sorted(n for n in os.listdir(run) if n.startswith("checkpoint_"))
    assert [os.listdir(run / c) for c in checkpoints] == [["checkpoint.ckpt"]] * 2
