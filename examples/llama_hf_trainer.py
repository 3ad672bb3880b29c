"""Fine-tune a Llama-architecture model with the Hugging Face ``Trainer`` on rafter workers (LoRA optional).

    python examples/llama_hf_trainer.py                # 2 workers, full fine-tune, 200 steps
    python examples/llama_hf_trainer.py --lora         # LoRA adapters through peft (pip install peft)
    python examples/llama_hf_trainer.py --steps 300    # run again: resumes from the last checkpoint

The Trainer does what it does anywhere (DDP across the workers, logging, checkpoints); two lines connect
it to rafter: ``trainer.add_callback(RayTrainReportCallback())`` sends its logs and checkpoints to the run,
and ``train.get_checkpoint()`` gives the checkpoint to resume from after a restart or a second run.

Nothing is downloaded: the model is a small, randomly initialised ``LlamaForCausalLM`` and the text and
byte-level tokenizer come from ``llama_finetune.py`` next to this file. With a real model only the model
and tokenizer lines change, e.g.:

    tokenizer = AutoTokenizer.from_pretrained("meta-llama/Llama-3.2-1B")
    model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B", torch_dtype=torch.bfloat16)
"""

from __future__ import annotations

import argparse
import os

import torch

from llama_finetune import ByteTokenizer, TokenBlocks, build_model, greedy_text, stdlib_corpus
from rafter import train
from rafter.train import CheckpointConfig, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

DEFAULTS = {"steps": 200, "batch_size": 8, "seq_len": 128, "lr": 3e-3, "lora": False, "lora_rank": 8,
            "logging_steps": 25, "save_steps": 100, "seed": 0}


class CausalLMBlocks(TokenBlocks):
    """The blocks as the Trainer wants them: a dict per example, labels = inputs (the model shifts them)."""

    def __getitem__(self, i: int) -> dict:
        block = super().__getitem__(i)
        return {"input_ids": block, "labels": block}


def make_model(cfg: dict):
    torch.manual_seed(cfg["seed"])  # the same initial weights on every rank (and for sample() below)
    model = build_model(ByteTokenizer.vocab_size, seq_len=cfg["seq_len"])
    if cfg["lora"]:
        from peft import LoraConfig, get_peft_model

        # train small adapters on the attention projections; the base weights stay frozen
        lora = LoraConfig(r=cfg["lora_rank"], lora_alpha=2 * cfg["lora_rank"], lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model


# -- the training function every worker runs ----------------------------------------------------------
def train_func(config: dict) -> None:
    from transformers import Trainer, TrainingArguments

    from rafter.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    cfg = {**DEFAULTS, **config}
    ids = torch.tensor(ByteTokenizer().encode(stdlib_corpus()), dtype=torch.long)
    args = TrainingArguments(
        output_dir=cfg["output_dir"], max_steps=cfg["steps"], per_device_train_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"], weight_decay=0.01, warmup_steps=min(20, cfg["steps"] // 10),
        logging_steps=cfg["logging_steps"], save_strategy="steps", save_steps=cfg["save_steps"],
        save_total_limit=2,  # local copies; rafter's CheckpointConfig decides what storage keeps
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        ddp_find_unused_parameters=False, report_to="none", disable_tqdm=True, seed=cfg["seed"],
    )
    trainer = Trainer(model=make_model(cfg), args=args, train_dataset=CausalLMBlocks(ids, cfg["seq_len"]))
    trainer.add_callback(RayTrainReportCallback())  # logs and checkpoints go to the rafter run
    trainer = prepare_trainer(trainer)

    checkpoint = train.get_checkpoint()  # after a restart, or when this run's name was used before
    if checkpoint:
        with checkpoint.as_directory() as folder:
            trainer.train(resume_from_checkpoint=os.path.join(folder, RayTrainReportCallback.CHECKPOINT_NAME))
    else:
        trainer.train()


# -- driver side -------------------------------------------------------------------------------------
def run(config=None, num_workers=2, storage_path=None, name="llama_hf_trainer"):
    cfg = {**DEFAULTS, **(config or {})}
    # the Trainer's own folder (it keeps its last checkpoints there); each run name gets its own
    cfg.setdefault("output_dir", os.path.join(storage_path or os.path.expanduser("~/rafter_results"),
                                              f"{name}_hf_output"))
    trainer = TorchTrainer(
        train_func,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    return trainer.fit()


def sample(result, config=None, prompt: str = "Return the ", max_new_tokens: int = 40) -> str:
    """Greedy text from the run's last checkpoint (a Hugging Face checkpoint folder), on this process."""
    from transformers import LlamaForCausalLM

    from rafter.train.huggingface.transformers import RayTrainReportCallback

    cfg = {**DEFAULTS, **(config or {})}
    with result.checkpoint.as_directory() as folder:
        path = os.path.join(folder, RayTrainReportCallback.CHECKPOINT_NAME)
        if cfg["lora"]:  # the checkpoint holds the adapters; the base is the seeded random init
            from peft import PeftModel

            model = PeftModel.from_pretrained(make_model({**cfg, "lora": False}), path)
        else:
            model = LlamaForCausalLM.from_pretrained(path)
    return greedy_text(model, prompt, max_new_tokens)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    parser.add_argument("--storage-path", default=None)
    parser.add_argument("--name", default=None, help="run name; the same name again resumes")
    args = parser.parse_args(argv)
    config = {"steps": args.steps, "lora": args.lora}
    name = args.name or ("llama_hf_trainer_lora" if args.lora else "llama_hf_trainer")
    result = run(config, num_workers=args.workers, storage_path=args.storage_path, name=name)
    losses = [m["loss"] for m in result.metrics_history if "loss" in m]
    print(f"step {result.metrics['step']}: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"checkpoint {result.checkpoint.path}")
    print(f"sample: {sample(result, config)!r}")


if __name__ == "__main__":
    main()
