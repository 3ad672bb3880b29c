"""Ray Train's own examples, read from the installed ``ray`` wheel and run with ``ray.train`` renamed
``rafter.train`` (nothing else changed). Only the ones that need no download: the others read FashionMNIST
or an S3 bucket. Skipped when Ray is not installed (their source ships in its wheel)."""

import importlib.util
import os
import re
import sys

import pytest

RENAMES = [
    (r"\bimport ray\.train as train\b", "import rafter.train as train"),
    (r"\bimport ray\.train\.torch\b", "import rafter.train.torch"),
    (r"\bfrom ray\.train\b", "from rafter.train"),
    (r"\bfrom ray import train\b", "from rafter import train"),
    (r"\bray\.train\.", "rafter.train."),
]


def ported(relative: str, tmp_path, name: str):
    """The example's module with its imports renamed, importable by name (workers get it by reference)."""
    spec = importlib.util.find_spec("ray")
    if spec is None:
        pytest.skip("Ray is not installed: its examples ship in its wheel")
    source_path = os.path.join(os.path.dirname(spec.origin), *relative.split("/"))
    with open(source_path) as f:
        source = f.read()
    for pattern, replacement in RENAMES:
        source = re.sub(pattern, replacement, source)
    assert "ray.train" not in source.replace("rafter.train", ""), "an import was left unrenamed"
    (tmp_path / f"{name}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


@pytest.fixture
def unload():
    yield
    for name in [n for n in sys.modules if n.startswith("ray_example_")]:
        del sys.modules[name]


def test_torch_linear_example(tmp_path, unload):
    linear = ported("train/examples/pytorch/torch_linear_example.py", tmp_path, "ray_example_linear")
    metrics = linear.train_linear(num_workers=2, epochs=2, storage_path=str(tmp_path / "results"))
    assert set(metrics) == {"loss"} and metrics["loss"] < 50  # y = 2x + 5 on [0, 10): learning from ~100
    [run] = os.listdir(tmp_path / "results")
    assert sorted(n for n in os.listdir(tmp_path / "results" / run) if n.startswith("checkpoint_")) == [
        "checkpoint_000001", "checkpoint_000002"]
