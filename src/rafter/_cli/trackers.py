"""``run.callbacks`` in a job file: ``tensorboard``, ``mlflow``, ``wandb`` or ``module:Class``, each with options.

    run:
      callbacks:
        - tensorboard                      # TensorBoardCallback()
        - type: mlflow                     # MLflowCallback(tracking_uri=..., experiment_name=...)
          tracking_uri: file:///tmp/mlruns
        - type: wandb                      # WandbCallback(project=..., mode=offline, ...)
          mode: offline
        - type: my_pkg.trackers:MyTracker  # any class; the other keys are its keyword arguments
"""

from __future__ import annotations

import importlib
from typing import Any, List

from rafter._cli.errors import ConfigError, did_you_mean

BUILT_IN = {
    "tensorboard": "rafter.train.callbacks:TensorBoardCallback",
    "mlflow": "rafter.train.callbacks:MLflowCallback",
    "wandb": "rafter.train.callbacks:WandbCallback",
}
_EXAMPLE = "run:\n  callbacks:\n    - tensorboard\n    - type: mlflow\n      experiment_name: my_experiment"


def build_callbacks(items: List[Any], source: str) -> List[Any]:
    return [_build(item, f"run.callbacks[{i}]", source) for i, item in enumerate(items)]


def _build(item: Any, path: str, source: str) -> Any:
    if isinstance(item, str):
        kind, kwargs = item, {}
    elif isinstance(item, dict) and isinstance(item.get("type"), str):
        kind = item["type"]
        kwargs = {k: v for k, v in item.items() if k != "type"}
    else:
        raise ConfigError(
            "each callback is a name (tensorboard, mlflow, wandb, module:Class) or a mapping with a 'type' key "
            "and the callback's options",
            source=source, path=path, value=item, has_value=True, fix=_EXAMPLE,
        )
    target = BUILT_IN.get(kind, kind)
    if ":" not in target:
        guess = did_you_mean(kind, BUILT_IN)
        raise ConfigError(
            f"unknown callback {kind!r}" + (f"; did you mean {guess!r}?" if guess else "")
            + f" Built in: {', '.join(BUILT_IN)}; or name a class as module:Class",
            source=source, path=path, value=item, has_value=True, fix=f"- {guess or 'tensorboard'}",
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"can't import the callback {target}: {type(exc).__name__}: {exc}", source=source,
                          path=path, value=item, has_value=True,
                          fix="name an importable class: - type: package.module:ClassName") from None
    try:
        return cls(**kwargs)
    except ImportError as exc:
        raise ConfigError(str(exc), source=source, path=path, value=item, has_value=True,
                          fix=str(exc).rsplit("Install it: ", 1)[-1]) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{attr}({', '.join(f'{k}=...' for k in kwargs)}) failed: {exc}", source=source,
                          path=path, value=item, has_value=True,
                          fix="give only the options the callback takes, e.g.\n" + _EXAMPLE) from None
