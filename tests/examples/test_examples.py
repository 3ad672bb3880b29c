"""Each example, run with small settings: as a script (``python examples/X.py``) and imported."""

import math
import os

import torch


def test_quickstart_runs_as_a_script(run_script):
    out = run_script("quickstart")
    assert "Training finished. Last loss: " in out


def test_digits_classifier_learns_checkpoints_and_resumes(example, tmp_path):
    digits = example("digits_classifier")
    storage = str(tmp_path / "results")
    result = digits.run(epochs=2, storage_path=storage, name="digits")
    got = [m["epoch"] for m in result.metrics_history]
    assert got == [0, 1]
    assert result.metrics["val_accuracy"] > 0.8
    state = torch.load(os.path.join(result.checkpoint.path, "state.pt"), weights_only=True)
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model"])

    resumed = digits.run(epochs=3, storage_path=storage, name="digits")  # same name: resumes at epoch 2
    got = [m["epoch"] for m in resumed.metrics_history]
    assert got == [0, 1, 2]  # epochs 0-1 not trained again
    assert resumed.metrics["val_accuracy"] > 0.8
    assert torch.load(os.path.join(resumed.checkpoint.path, "state.pt"), weights_only=True)["epoch"] == 2


SMALL = {"steps": 20, "report_every": 10, "checkpoint_every": 10, "seq_len": 64}


def test_llama_ddp_then_resume_with_fsdp_in_bf16(example, tmp_path):
    llama = example("llama_finetune")
    storage = str(tmp_path / "results")
    ddp = llama.run(SMALL, storage_path=storage, name="llama")
    first, last = ddp.metrics_history[0], ddp.metrics_history[-1]
    got = [m["step"] for m in ddp.metrics_history]
    assert got == [10, 20]
    assert last["loss"] < first["loss"] < math.log(258)  # learning, from about ln(vocab) at random init
    assert last["tokens_per_s"] > 0

    # The DDP checkpoint resumes into an FSDP model (a full, plain state dict), here in bf16 on CPU.
    fsdp = llama.run({**SMALL, "steps": 30, "fsdp": True, "precision": "bf16"}, storage_path=storage, name="llama")
    got = [m["step"] for m in fsdp.metrics_history]
    assert got == [10, 20, 30]  # resumed at 20, not from 0
    assert math.isfinite(fsdp.metrics["loss"]) and fsdp.metrics["loss"] < first["loss"] + 0.5
    assert fsdp.checkpoint.get_metadata() == {"step": 30}
    assert ddp.metrics["precision"] == "float32" and fsdp.metrics["precision"] == "bfloat16"
    text = llama.sample(fsdp, prompt="The ", max_new_tokens=5)  # the FSDP checkpoint in a plain model
    assert text.startswith("The ")


def test_llama_fsdp_fp16_with_grad_scaler_runs_as_a_script(run_script, tmp_path):
    # fp16 + GradScaler on FSDP2 is what a run mixing e.g. A100s and V100s gets; here forced on CPU.
    out = run_script("llama_finetune", "--fsdp", "--precision", "fp16", "--steps", "6",
                     "--storage-path", str(tmp_path / "r"))
    assert "rank 1: " in out and "mixed precision: off (fp32)" in out  # per-rank devices, the auto choice
    assert "precision='fp16' given" in out
    assert "step 6: loss" in out and "(float16)" in out and "sample: " in out
