"""rafter.train.huggingface.transformers: a real transformers.Trainer on 2 gloo workers, killed and resumed."""

import json
import os

import pytest

pytest.importorskip("transformers")

from tests.integrations.tiny import assert_same_weights, fit_with_rank_1_killed, hf_train, two_workers  # noqa: E402


def _trainer(tmp_path, name, max_failures=0):
    return two_workers(hf_train, tmp_path, name, max_failures)


def test_logs_and_checkpoints_reach_rafter_and_a_sigkilled_worker_resumes_from_the_hf_checkpoint(tmp_path):
    reference = _trainer(tmp_path, "reference").fit()
    steps = [m["step"] for m in reference.metrics_history]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8, 8]  # a log per step; the last one is train()'s summary
    assert all("loss" in m and "learning_rate" in m for m in reference.metrics_history[:8])
    assert "train_runtime" in reference.metrics_history[-1]
    names = sorted(n for n in os.listdir(reference.path) if n.startswith("checkpoint_"))
    assert len(names) == 2
    files = sorted(os.listdir(os.path.join(reference.checkpoint.path, "checkpoint")))
    for expected in ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                     "rng_state_0.pth", "rng_state_1.pth"):
        assert expected in files, files
    state = json.loads(open(os.path.join(reference.checkpoint.path, "checkpoint", "trainer_state.json")).read())
    assert state["global_step"] == 8
    assert reference.best_checkpoints[-1][1]["step"] == 8
    assert "[rafter] warning" not in (tmp_path / "results" / "reference" / "logs" / "rank_0.log").read_text()

    # rank 1 is SIGKILLed after its report of step 6: the restart resumes from step 4's checkpoint
    result, second = fit_with_rank_1_killed(hf_train, tmp_path, report=5)
    assert result.return_value["resumed_at"] == 4
    got = [m["step"] for m in second]
    assert got == [5, 6, 7, 8, 8]
    assert_same_weights(result.return_value["weights"], reference.return_value["weights"])


@pytest.mark.slow
def test_fit_again_after_the_driver_was_killed_resumes_from_the_hf_checkpoint(tmp_path):
    from tests.integrations.driver_kill import kill_then_resume

    # the workers hold after step 4's checkpoint; the driver is killed once it is committed
    name, again = kill_then_resume(tmp_path, "hf_train", preload="transformers", hold_at=4, num_checkpoints=1,
                                   final_metric="step")
    assert "RESUMED_AT 4 FINAL 8" in again.stdout, again.stdout


def test_trl_sft_trainer_reports_through_the_same_callback(tmp_path):
    pytest.importorskip("trl")
    from tests.integrations.tiny import sft_train

    result = two_workers(sft_train, tmp_path, "sft").fit()
    got = [m["step"] for m in result.metrics_history]
    assert got == [1, 2, 3, 4, 4]
    assert len([c for c, _m in result.best_checkpoints]) == 2
    assert os.path.isfile(os.path.join(result.checkpoint.path, "checkpoint", "model.safetensors"))


def trainer_without_the_callback(config):
    from transformers import Trainer, TrainingArguments

    from rafter.train.huggingface.transformers import prepare_trainer
    from tests.integrations.tiny import tiny_llama, token_rows

    args = TrainingArguments(output_dir=config["output_dir"], max_steps=1, report_to="none", use_cpu=True)
    prepare_trainer(Trainer(model=tiny_llama(), args=args, train_dataset=token_rows(8)))
    try:
        prepare_trainer(object())
    except TypeError as exc:
        return str(exc)


def test_prepare_trainer_warns_without_the_callback_and_refuses_what_is_not_a_trainer(tmp_path):
    from rafter.train import RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    result = TorchTrainer(trainer_without_the_callback, train_loop_config={"output_dir": str(tmp_path / "out")},
                          scaling_config=ScalingConfig(num_workers=1),
                          run_config=RunConfig(name="bare", storage_path=str(tmp_path))).fit()
    assert "expected a transformers.Trainer (or a subclass such as trl.SFTTrainer), got builtins.object" in (
        result.return_value)
    log = (tmp_path / "bare" / "logs" / "rank_0.log").read_text()
    assert "[rafter] warning: prepare_trainer(): the trainer has no RayTrainReportCallback" in log
    assert "trainer.add_callback(RayTrainReportCallback())" in log
