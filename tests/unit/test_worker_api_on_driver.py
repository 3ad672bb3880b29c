import pytest
import torch

import rafter.train as train


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: train.report({"a": 1}), "report"),
        (lambda: train.get_context(), "get_context"),
        (lambda: train.get_checkpoint(), "get_checkpoint"),
        (lambda: train.torch.prepare_model(torch.nn.Linear(1, 1)), "prepare_model"),
        (lambda: train.torch.get_device(), "get_device"),
    ],
)
def test_worker_only_calls_on_driver_say_where_to_call_them(call, name):
    with pytest.raises(RuntimeError) as info:
        call()
    message = str(info.value)
    assert name in message and "inside the training function" in message


def test_import_rafter_train_alone_exposes_torch_helpers():
    import subprocess
    import sys

    code = "import rafter.train as train; print(train.torch.prepare_model.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "prepare_model"


def test_import_rafter_is_light_and_runs_nothing():
    import subprocess
    import sys

    code = "import sys, threading, rafter, rafter.train; print('torch' in sys.modules, threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1"]
