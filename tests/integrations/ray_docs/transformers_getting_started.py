# Ray Train's "Get started with distributed training using Hugging Face Transformers" example
# (docs.ray.io, train/getting-started-transformers), run on rafter. Changed lines, each marked "# rafter:":
# - every `ray` became `rafter`;
# - the dataset, tokenizer, model and metric come from tiny_hub (local stand-ins, nothing is downloaded)
#   instead of `datasets`, `transformers` and `evaluate`: the import lines change, the calls don't;
# - `evaluation_strategy=` is `eval_strategy=` (the name transformers 4.46+ accepts);
# - `use_gpu=True` follows the machine, so it also runs where there is no GPU.
import os

import numpy as np
import tiny_hub as evaluate  # rafter: was `import evaluate`
from tiny_hub import load_dataset  # rafter: was `from datasets import load_dataset`
from transformers import (
    Trainer,
    TrainingArguments,
)
from tiny_hub import AutoTokenizer, AutoModelForSequenceClassification  # rafter: were from transformers
import torch  # rafter: for use_gpu below

import rafter.train.huggingface.transformers  # rafter
from rafter.train import ScalingConfig  # rafter
from rafter.train.torch import TorchTrainer  # rafter


# [1] Encapsulate data preprocessing, training, and evaluation
# logic in a training function
# ============================================================
def train_func():
    # Datasets
    dataset = load_dataset("yelp_review_full")
    tokenizer = AutoTokenizer.from_pretrained("bert-base-cased")

    def tokenize_function(examples):
        return tokenizer(examples["text"], padding="max_length", truncation=True)

    small_train_dataset = (
        dataset["train"].select(range(100)).map(tokenize_function, batched=True)
    )
    small_eval_dataset = (
        dataset["test"].select(range(100)).map(tokenize_function, batched=True)
    )

    # Model
    model = AutoModelForSequenceClassification.from_pretrained(
        "bert-base-cased", num_labels=5
    )

    # Evaluation Metrics
    metric = evaluate.load("accuracy")

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        predictions = np.argmax(logits, axis=-1)
        return metric.compute(predictions=predictions, references=labels)

    # Hugging Face Trainer
    training_args = TrainingArguments(
        output_dir="test_trainer",
        eval_strategy="epoch",  # rafter: was evaluation_strategy="epoch"
        save_strategy="epoch",
        report_to="none",
    )

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=small_train_dataset,
        eval_dataset=small_eval_dataset,
        compute_metrics=compute_metrics,
    )

    # [2] Report Metrics and Checkpoints to Ray Train
    # ===============================================
    callback = rafter.train.huggingface.transformers.RayTrainReportCallback()  # rafter
    trainer.add_callback(callback)

    # [3] Prepare Transformers Trainer
    # ================================
    trainer = rafter.train.huggingface.transformers.prepare_trainer(trainer)  # rafter

    # Start Training
    trainer.train()


# [4] Define a Ray TorchTrainer to launch `train_func` on all workers
# ===================================================================
ray_trainer = TorchTrainer(
    train_func,
    scaling_config=ScalingConfig(num_workers=2, use_gpu=torch.cuda.is_available()),  # rafter: was use_gpu=True
    # [4a] For multi-node clusters, configure persistent storage that is
    # accessible across all worker nodes
    # run_config=rafter.train.RunConfig(storage_path="s3://..."),  # rafter
)
result: rafter.train.Result = ray_trainer.fit()  # rafter

# [5] Load the trained model
with result.checkpoint.as_directory() as checkpoint_dir:
    checkpoint_path = os.path.join(
        checkpoint_dir,
        rafter.train.huggingface.transformers.RayTrainReportCallback.CHECKPOINT_NAME,  # rafter
    )
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint_path)
print("LOADED", type(model).__name__, "FROM", checkpoint_path, flush=True)  # rafter: for the test
