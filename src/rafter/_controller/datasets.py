"""``TorchTrainer(datasets=...)``: Ray Data datasets sharded per worker, delivered on request.

A worker's first ``get_dataset_shard()`` asks the driver for its shards. The driver splits the datasets
once per attempt (``DataConfig.configure``: ``streaming_split`` across the ranks) and replies with that
rank's ``{name: DataIterator}``, pickled, and the Ray address to connect to. On the Ray backend the
workers are Ray actors already; on the local backend they join the driver's Ray instance first. The
iterators pull blocks from Ray's object store, not through rafter.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from rafter._backends import events as ev
from rafter._worker import messages as msg

RAY_MISSING = (
    "TorchTrainer(datasets=...) takes Ray Data datasets, which need Ray: pip install 'rafter-train[data]' "
    "(or 'ray[data]==2.60.*'). Without Ray, load data in the train function with a torch DataLoader and "
    "rafter.train.torch.prepare_data_loader."
)


def check_datasets(datasets: Any) -> Dict[str, Any]:
    """Validate ``TorchTrainer(datasets=...)`` on construction: a dict of names to Datasets (or callables)."""
    from rafter.train._validation import ConfigTypeError

    if not isinstance(datasets, dict) or not all(isinstance(k, str) for k in datasets):
        raise ConfigTypeError("TorchTrainer", "datasets", datasets,
                              "expected a dict of dataset names to Ray Data datasets, e.g. "
                              "datasets={'train': ray.data.read_parquet(path)}")
    try:
        import ray.data
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    for name, ds in datasets.items():
        if not (isinstance(ds, ray.data.Dataset) or callable(ds)):
            raise ConfigTypeError(
                "TorchTrainer", "datasets", datasets,
                f"datasets[{name!r}] must be a ray.data.Dataset (or a function returning one), got "
                f"{type(ds).__module__}.{type(ds).__qualname__}; wrap it, e.g. ray.data.from_torch(dataset) or "
                f"ray.data.from_items(rows)")
    return dict(datasets)


def materialize(datasets: Dict[str, Any]) -> Dict[str, Any]:
    """Connect the driver to Ray (starting a local instance if needed) and call dataset factories."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    return {name: ds() if callable(ds) and not isinstance(ds, ray.data.Dataset) else ds
            for name, ds in datasets.items()}


def split(datasets: Dict[str, Any], dataset_config, world_size: int, node_ids: Optional[List[str]] = None):
    from rafter.train._data_config import DataConfig

    config = dataset_config if dataset_config is not None else DataConfig()
    return config.configure(datasets, world_size=world_size, worker_handles=None, worker_node_ids=node_ids)


class DatasetShards:
    """Attempt monitor: answers each rank's request for its shards (see the module docstring)."""

    def __init__(self, view, datasets: Optional[Dict[str, Any]] = None, config=None) -> None:
        self._group = view.group
        self._datasets = datasets
        self._config = config
        self._shards: Optional[List[Dict[str, Any]]] = None
        self._error: Optional[str] = None

    def tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        self._shards = None

    def on_event(self, event) -> None:
        if not isinstance(event, ev.DatasetRequest):
            return
        reply = self._shards_for(event.rank)
        try:
            self._group.send(event.rank, reply)
        except OSError:
            pass

    def _shards_for(self, rank: int) -> msg.DatasetsDone:
        from rafter._util.pickling import dumps

        if not self._datasets:
            return msg.DatasetsDone(None, dumps({}))
        import ray

        if self._shards is None and self._error is None:
            try:
                self._shards = split(self._datasets, self._config, len(self._group.ranks))
            except Exception as exc:  # noqa: BLE001 - every rank raises it
                self._error = f"splitting the datasets failed: {type(exc).__name__}: {exc}"
        if self._error:
            return msg.DatasetsDone(None, None, self._error)
        address = ray.get_runtime_context().gcs_address
        return msg.DatasetsDone(address, dumps(self._shards[rank]))
