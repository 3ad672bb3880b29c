"""``DataConfig``: how ``TorchTrainer(datasets=...)`` hands Ray Data datasets to the workers (Ray's names)."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Union


class DataConfig:
    """Which datasets are split among the workers, and with which Ray Data execution options.

    Args:
        datasets_to_split: ``"all"`` (default) or a list of dataset names. A split dataset is sharded with
            ``Dataset.streaming_split(num_workers, equal=True)``; every other dataset is given whole to
            every worker.
        execution_options: Ray Data ``ExecutionOptions`` for every dataset, or a dict of them by dataset
            name. None: the options of the current ``DataContext``.
        enable_shard_locality: split with the workers' nodes as locality hints (Ray backend).
    """

    def __init__(self, datasets_to_split: Union[str, List[str]] = "all", execution_options: Any = None,
                 enable_shard_locality: bool = True) -> None:
        if not (datasets_to_split == "all" or (isinstance(datasets_to_split, list)
                                                and all(isinstance(n, str) for n in datasets_to_split))):
            raise TypeError(
                f"DataConfig(datasets_to_split={datasets_to_split!r}): expected 'all' or a list of dataset names, "
                f"e.g. DataConfig(datasets_to_split=['train'])."
            )
        self._datasets_to_split = datasets_to_split
        self._user_execution_options = execution_options
        self._enable_shard_locality = enable_shard_locality

    @staticmethod
    def default_ingest_options():
        """The Ray Data ``ExecutionOptions`` used for ingest: a copy of the current ``DataContext``'s."""
        from ray.data.context import DataContext

        return copy.deepcopy(DataContext.get_current().execution_options)

    def _execution_options(self, name: str):
        options = self._user_execution_options
        if isinstance(options, dict):
            options = options.get(name)
        return copy.deepcopy(options) if options is not None else self.default_ingest_options()

    def configure(self, datasets: Dict[str, Any], world_size: int, worker_handles: Optional[list] = None,
                  worker_node_ids: Optional[List[str]] = None, **kwargs) -> List[Dict[str, Any]]:
        """Each worker's ``{name: DataIterator}``, one dict per rank (as Ray's ``DataConfig.configure``)."""
        out: List[Dict[str, Any]] = [{} for _ in range(world_size)]
        split = set(datasets) if self._datasets_to_split == "all" else set(self._datasets_to_split)
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, ds in datasets.items():
            if ds.name is None:
                ds.set_name(name)
            ds = ds.copy(ds)
            ds.context.execution_options = self._execution_options(name)
            if name in split:
                for rank, shard in enumerate(ds.streaming_split(world_size, equal=True, locality_hints=hints)):
                    out[rank][name] = shard
            else:
                for rank in range(world_size):
                    out[rank][name] = ds.iterator()
        return out
