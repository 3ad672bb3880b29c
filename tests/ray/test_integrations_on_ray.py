"""The Hugging Face and Lightning integrations on the Ray backend: one worker on each of 2 Ray nodes, rank 1
SIGKILLed once, the restart resuming from the framework's checkpoint (as on the local backend)."""

import pytest

from rafter.testing import inject_fault
from rafter.train import FailureConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

pytest.importorskip("ray")
pytest.importorskip("transformers")
pytest.importorskip("lightning")


def _killed_once(fn, run_config, tmp_path, name, report):

    trainer = TorchTrainer(fn, train_loop_config={"output_dir": str(tmp_path / f"{name}_out")},
                           scaling_config=ScalingConfig(num_workers=2, placement_strategy="SPREAD"),
                           run_config=run_config(name=name, cluster="ray",
                                                 failure_config=FailureConfig(max_failures=1)))
    inject_fault(trainer, point="report", action="sigkill", rank=1, report=report)
    result = trainer.fit()
    assert len(result.attempts) == 2 and "SIGKILL" in result.attempts[0]["error"]
    return result, result.metrics_history[result.attempts[1]["first_report"]:]


@pytest.mark.slow
def test_hf_and_lightning_trainers_resume_after_a_worker_is_killed_on_a_ray_cluster(ray_cluster, run_config, tmp_path):
    from tests.integrations.tiny import hf_train, lightning_train

    hf, second = _killed_once(hf_train, run_config, tmp_path, "hf", report=5)
    assert hf.return_value["resumed_at"] == 4
    got = [m["step"] for m in second]
    assert got == [5, 6, 7, 8, 8]
    pl, second = _killed_once(lightning_train, run_config, tmp_path, "pl", report=1)
    assert pl.return_value["resumed_at"] == 1 and pl.return_value["world_size"] == 2
    got = [m["epoch"] for m in second]
    assert got == [2, 3]
