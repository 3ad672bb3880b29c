"""``import rafter.train`` (and its torch, callbacks and job-file modules) never imports an optional integration."""

import json
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("module, hidden, install", [
    ("rafter.train.huggingface.transformers", ["transformers"], "pip install 'rafter-train[transformers]'"),
    ("rafter.train.lightning", ["lightning", "lightning.pytorch", "pytorch_lightning"],
     "pip install 'rafter-train[lightning]'"),
])
def test_an_integration_without_its_library_says_what_to_install(module, hidden, install):
    code = f"import sys\nsys.modules.update(dict.fromkeys({hidden!r}))\nimport {module}\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("ModuleNotFoundError: rafter.train."), out.stderr
    assert install in out.stderr


def test_wandb_callback_without_wandb_says_what_to_install(monkeypatch):
    from rafter.train.callbacks import WandbCallback

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match="Install it: pip install wandb"):
        WandbCallback()
