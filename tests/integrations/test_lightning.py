"""rafter.train.lightning: a real Lightning Trainer on 2 gloo workers, killed and resumed."""

import os

import pytest
import torch

pytest.importorskip("lightning")

from tests.integrations.tiny import (  # noqa: E402
    assert_same_weights,
    fit_with_rank_1_killed,
    lightning_train,
    two_workers,
)


def _trainer(tmp_path, name, max_failures=0):
    return two_workers(lightning_train, tmp_path, name, max_failures)


def test_epochs_report_metrics_and_checkpoints_and_a_sigkilled_worker_resumes_from_the_lightning_checkpoint(
    tmp_path,
):
    reference = _trainer(tmp_path, "reference").fit()
    assert reference.return_value["world_size"] == 2
    assert reference.return_value["strategy"] == "RayDDPStrategy"
    got = [(m["epoch"], m["step"]) for m in reference.metrics_history]
    assert got == [(0, 4), (1, 8), (2, 12), (3, 16)]  # 64 samples / 2 workers / batches of 8 = 4 steps an epoch
    assert all(isinstance(m["loss"], float) for m in reference.metrics_history)
    assert [os.listdir(c.path) for c, _m in reference.best_checkpoints] == [["checkpoint.ckpt"]] * 4
    state = torch.load(os.path.join(reference.checkpoint.path, "checkpoint.ckpt"), weights_only=False)
    assert state["epoch"] == 3 and state["global_step"] == 16
    assert "[rafter] warning" not in (tmp_path / "results" / "reference" / "logs" / "rank_0.log").read_text()

    # rank 1 is SIGKILLed right after its report of epoch 1: the restart resumes from that checkpoint
    result, second = fit_with_rank_1_killed(lightning_train, tmp_path, report=1)
    assert result.return_value["resumed_at"] == 1
    got = [m["epoch"] for m in second]
    assert got == [2, 3]
    assert_same_weights(result.return_value["weights"], reference.return_value["weights"])


def test_report_callback_refuses_ray_v2_options_rafter_has_not():
    from rafter.train.lightning import RayTrainReportCallback

    assert RayTrainReportCallback(checkpoint_upload_mode="SYNC").checkpoint_upload_mode == "SYNC"
    with pytest.raises(ValueError, match="checkpoint_upload_mode='ASYNC'.*synchronously only"):
        RayTrainReportCallback(checkpoint_upload_mode="ASYNC")
    with pytest.raises(ValueError, match="validation=True.*no asynchronous checkpoint validation"):
        RayTrainReportCallback(validation=True)


def test_fsdp_on_cpu_workers_fails_before_training_naming_use_gpu_and_ddp(tmp_path):
    from rafter.train import RunConfig, ScalingConfig, TrainingFailedError
    from rafter.train.torch import TorchTrainer

    trainer = TorchTrainer(lightning_train, train_loop_config={"output_dir": str(tmp_path / "out"), "fsdp": True},
                           scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="fsdp", storage_path=str(tmp_path)))
    with pytest.raises(TrainingFailedError) as info:
        trainer.fit()
    first = str(info.value).split("\n")[0]
    assert "raised RuntimeError: RayFSDPStrategy needs GPUs" in first
    assert "ScalingConfig(use_gpu=True)" in first and "strategy=RayDDPStrategy()" in first


@pytest.mark.slow
def test_fit_again_after_the_driver_was_killed_resumes_from_the_lightning_checkpoint(tmp_path):
    from tests.integrations.driver_kill import kill_then_resume

    # the workers hold after epoch 1's report; the driver is killed once its checkpoint is committed
    name, again = kill_then_resume(tmp_path, "lightning_train", preload="lightning.pytorch", hold_at=1,
                                   num_checkpoints=2, final_metric="epoch")
    assert "RESUMED_AT 1 FINAL 3" in again.stdout, again.stdout
