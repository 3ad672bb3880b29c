"""rafter: PyTorch distributed training with Ray Train's API.

``from rafter import train`` gives the Ray-Train-style API; workers are local processes by default
and Ray actors when a Ray cluster is in use. Nothing here runs at import time.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "train"]


def __getattr__(name):
    if name == "train":
        import importlib

        return importlib.import_module("rafter.train")
    raise AttributeError(f"module 'rafter' has no attribute {name!r}")
