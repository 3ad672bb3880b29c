"""``import rafter.train`` (and its torch, callbacks and job-file modules) never imports an optional integration."""

import json
import subprocess
import sys

OPTIONAL = ["transformers", "lightning", "pytorch_lightning", "wandb", "trl", "peft", "mlflow", "tensorboard", "ray"]


def test_rafter_train_imports_none_of_the_optional_libraries():
    code = (
        "import json, sys\n"
        "import rafter.train, rafter.train.torch, rafter.train.callbacks, rafter._cli.trackers\n"
        "from rafter.train.callbacks import WandbCallback, MLflowCallback, TensorBoardCallback\n"
        f"print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []
