"""Tiny models and train functions the integration tests share (importable by the workers)."""

import json
import os

import torch

from rafter import train


def two_workers(fn, tmp_path, name: str, max_failures: int = 0):
    """A TorchTrainer of ``fn`` on 2 workers, its run ``name`` under ``tmp_path/results``, its framework's own
    files under ``tmp_path/<name>_out``."""
    from rafter.train import FailureConfig, RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    return TorchTrainer(
        fn,
        train_loop_config={"output_dir": str(tmp_path / f"{name}_out")},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name=name, storage_path=str(tmp_path / "results"),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )


def fit_with_rank_1_killed(fn, tmp_path, report: int):
    """Fit ``fn`` with rank 1 SIGKILLed right after its report ``report`` (0-based), restarting once.
    Returns the result and the reports of the second attempt."""
    from rafter.testing import inject_fault

    trainer = two_workers(fn, tmp_path, "killed", max_failures=1)
    inject_fault(trainer, point="report", action="sigkill", rank=1, report=report)
    result = trainer.fit()
    assert len(result.attempts) == 2
    assert "SIGKILL" in result.attempts[0]["error"]
    return result, result.metrics_history[result.attempts[1]["first_report"]:]


def assert_same_weights(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def tiny_llama(seed: int = 0):
    """A randomly initialised Llama with 2 layers of width 16 (about 10k parameters): nothing is downloaded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config)


def token_rows(n: int = 64, seq_len: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (n, seq_len), generator=g)
    return [{"input_ids": row, "labels": row} for row in ids]


def hf_train(config):
    """``transformers.Trainer`` on the tiny Llama, reporting through RayTrainReportCallback; resumes from
    ``train.get_checkpoint()`` as Ray's docs show. Returns rank 0's final weights and the step it resumed at."""
    from transformers import Trainer, TrainingArguments

    from rafter.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    args = TrainingArguments(
        output_dir=config["output_dir"], max_steps=config.get("max_steps", 8), per_device_train_batch_size=4,
        logging_steps=1, save_strategy="steps", save_steps=config.get("save_steps", 4), report_to="none",
        use_cpu=True, disable_tqdm=True, ddp_find_unused_parameters=False, seed=0,
    )
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=token_rows())
    trainer.add_callback(RayTrainReportCallback())
    if config.get("hold_at"):
        trainer.add_callback(hold_forever_after_save(config["hold_at"]))
    trainer = prepare_trainer(trainer)
    resumed_at = 0
    checkpoint = train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            path = os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME)
            with open(os.path.join(path, "trainer_state.json")) as f:
                resumed_at = json.load(f)["global_step"]
            trainer.train(resume_from_checkpoint=path)
    else:
        trainer.train()
    return {"resumed_at": resumed_at, "weights": {k: v.clone() for k, v in trainer.model.state_dict().items()}}


def hold_forever_after_save(step: int):
    """A TrainerCallback that blocks every rank once the checkpoint of ``step`` was reported (the test then
    kills the driver)."""
    import threading

    from transformers import TrainerCallback

    class Hold(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                print(f"HOLDING AT {step}", flush=True)
                threading.Event().wait()

    return Hold()


def tiny_tokenizer():
    """A word-level tokenizer over 60 made-up words, built in memory (a PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(60)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def sentences(n: int = 64, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(0, 60, (12,), generator=g)) for _ in range(n)]


def sft_train(config):
    """TRL's SFTTrainer (a transformers.Trainer subclass) with the same callback."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rafter.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    args = SFTConfig(output_dir=config["output_dir"], max_steps=4, per_device_train_batch_size=4,
                     logging_steps=1, save_steps=2, report_to="none", use_cpu=True, disable_tqdm=True,
                     ddp_find_unused_parameters=False, max_length=16)
    trainer = SFTTrainer(model=tiny_llama(), args=args, processing_class=tiny_tokenizer(),
                         train_dataset=Dataset.from_dict({"text": sentences()}),
                         callbacks=[RayTrainReportCallback()])
    prepare_trainer(trainer).train()


def lightning_module_class():
    """A LightningModule that fits y = x @ w with one linear layer (defined lazily: lightning is optional)."""
    import lightning.pytorch as pl

    class Regression(pl.LightningModule):
        def __init__(self, lr: float = 0.05):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("loss", loss, on_step=False, on_epoch=True, sync_dist=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    return Regression


def regression_loader(n: int = 64, batch_size: int = 8):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def lightning_train(config):
    """A Lightning Trainer set up as Ray's docs show; resumes from ``train.get_checkpoint()``."""
    import lightning.pytorch as pl

    from rafter.train.lightning import (RayDDPStrategy, RayFSDPStrategy, RayLightningEnvironment,
                                        RayTrainReportCallback, prepare_trainer)

    torch.manual_seed(0)
    model = lightning_module_class()()
    callbacks = [RayTrainReportCallback()]
    if config.get("hold_at") is not None:
        callbacks.append(hold_forever_after_epoch(config["hold_at"]))
    trainer = pl.Trainer(
        max_epochs=config.get("max_epochs", 4), devices="auto", accelerator="cpu",
        strategy=RayFSDPStrategy() if config.get("fsdp") else RayDDPStrategy(),
        plugins=[RayLightningEnvironment()], callbacks=callbacks, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=config["output_dir"],
    )
    trainer = prepare_trainer(trainer)
    resumed_at = None
    checkpoint = train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            path = os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME)
            resumed_at = torch.load(path, weights_only=False)["epoch"]
            trainer.fit(model, train_dataloaders=regression_loader(), ckpt_path=path)
    else:
        trainer.fit(model, train_dataloaders=regression_loader())
    return {"resumed_at": resumed_at, "world_size": trainer.world_size, "strategy": type(trainer.strategy).__name__,
            "weights": {k: v.clone() for k, v in model.state_dict().items()}}


def hold_forever_after_epoch(epoch: int):
    import threading

    import lightning.pytorch as pl

    class Hold(pl.callbacks.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == epoch:
                print(f"HOLDING AT {epoch}", flush=True)
                threading.Event().wait()

    return Hold()
