"""examples/llama_hf_trainer.py with small settings: full fine-tune, resume with more steps, and LoRA (peft)."""

import importlib
import os

import pytest

pytest.importorskip("transformers")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
SMALL = {"steps": 8, "logging_steps": 2, "save_steps": 4, "seq_len": 32, "batch_size": 4}


@pytest.fixture
def example(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an example must never download
    monkeypatch.syspath_prepend(EXAMPLES)
    return importlib.import_module("llama_hf_trainer")


def test_full_fine_tune_reports_checkpoints_then_resumes_with_more_steps(example, tmp_path):
    storage = str(tmp_path / "results")
    first = example.run(SMALL, storage_path=storage, name="llama")
    got = [m["step"] for m in first.metrics_history]
    assert got == [2, 4, 6, 8, 8]
    losses = [m["loss"] for m in first.metrics_history if "loss" in m]
    assert losses[-1] < losses[0]
    assert os.path.isfile(os.path.join(first.checkpoint.path, "checkpoint", "model.safetensors"))
    assert isinstance(example.sample(first, SMALL, max_new_tokens=4), str)

    again = example.run({**SMALL, "steps": 12}, storage_path=storage, name="llama")  # same name: resumes at 8
    got = [m["step"] for m in again.metrics_history[len(first.metrics_history):]]
    assert got == [10, 12, 12]


def test_lora_adapters_are_what_the_checkpoints_hold(example, tmp_path):
    pytest.importorskip("peft")
    config = {**SMALL, "steps": 4, "lora": True}
    result = example.run(config, storage_path=str(tmp_path), name="lora")
    files = os.listdir(os.path.join(result.checkpoint.path, "checkpoint"))
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert isinstance(example.sample(result, config, max_new_tokens=4), str)
