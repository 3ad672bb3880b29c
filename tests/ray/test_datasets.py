"""TorchTrainer(datasets=...) with Ray Data: shards per worker (streaming_split), local and Ray backends."""

import pytest

import rafter.train as train
from rafter.train import DataConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer

ray = pytest.importorskip("ray")


def read_shards(config):
    rank = train.get_context().get_world_rank()
    seen = {}
    for epoch in range(2):
        ids = []
        for batch in train.get_dataset_shard("train").iter_torch_batches(batch_size=4):
            ids += batch["id"].tolist()
        seen[epoch] = sorted(ids)
    whole = sorted(r["id"] for r in train.get_dataset_shard("val").iter_rows())
    train.report({"rank": rank, "epochs": seen, "val": len(whole)})
    return {"rank": rank, "epochs": seen, "val": whole}


class Gather(train.UserCallback):
    def __init__(self):
        self.metrics = []

    def after_report(self, run_context, metrics, checkpoint):
        self.metrics.append(metrics)


@pytest.mark.parametrize("cluster", ["local", "ray"])
def test_split_datasets_give_each_rank_a_disjoint_part_every_epoch(ray_cluster, run_config, cluster):
    gather = Gather()
    result = TorchTrainer(
        read_shards,
        scaling_config=ScalingConfig(num_workers=2),
        run_config=run_config(name=f"data-{cluster}", cluster=cluster, callbacks=[gather]),
        datasets={"train": ray.data.range(40), "val": lambda: ray.data.range(10)},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    ).fit()
    [reports] = gather.metrics
    assert [m["rank"] for m in reports] == [0, 1] and [m["val"] for m in reports] == [10, 10]
    for epoch in ("0", "1"):  # JSON-safe keys don't matter here: metrics travel pickled
        parts = [m["epochs"][int(epoch)] for m in reports]
        assert [len(p) for p in parts] == [20, 20]  # equal=True
        assert sorted(parts[0] + parts[1]) == list(range(40))  # disjoint, together the whole dataset
    assert result.return_value["val"] == list(range(10))  # not split: every rank reads all of it


def two_ranks_ids():
    ids = sorted(r["id"] for r in train.get_dataset_shard("train").iter_rows())
    train.report({"ids": ids})
    return ids


class AllIds(train.UserCallback):
    def __init__(self):
        self.ids = None

    def after_report(self, run_context, metrics, checkpoint):
        self.ids = [m["ids"] for m in metrics]


def test_shards_cover_the_dataset_once(ray_cluster, run_config):
    cb = AllIds()
    TorchTrainer(two_ranks_ids, scaling_config=ScalingConfig(num_workers=2),
                 run_config=run_config(name="cover", cluster="local", callbacks=[cb]),
                 datasets={"train": ray.data.range(30)}).fit()
    a, b = cb.ids
    assert sorted(a + b) == list(range(30)) and not set(a) & set(b)


def local_mode_shard():
    return sorted(r["id"] for r in train.get_dataset_shard("train").iter_rows())


def test_local_mode_gets_the_whole_dataset(ray_cluster, run_config):
    result = TorchTrainer(local_mode_shard, scaling_config=ScalingConfig(num_workers=0),
                          run_config=run_config(name="local-data"), datasets={"train": ray.data.range(7)}).fit()
    assert result.return_value == list(range(7))


def unknown_name():
    train.get_dataset_shard("validation")


def test_unknown_dataset_name_is_a_key_error_naming_the_ones_given(ray_cluster, run_config):
    with pytest.raises(TrainingFailedError) as info:
        TorchTrainer(unknown_name, scaling_config=ScalingConfig(num_workers=2),
                     run_config=run_config(name="unknown", cluster="local"),
                     datasets={"train": ray.data.range(4)}).fit()
    assert "KeyError" in str(info.value) and "has 'train'" in str(info.value)


def test_datasets_must_be_ray_datasets():
    with pytest.raises(TypeError, match=r"datasets\['train'\] must be a ray.data.Dataset .* got builtins.list"):
        TorchTrainer(lambda: None, datasets={"train": [1, 2, 3]})


class OnlyTrainSplit(DataConfig):
    """A custom DataConfig as in Ray's data-loading guide: configure() returns each rank's iterators."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options = DataConfig.default_ingest_options()
        shards = datasets["train"].streaming_split(world_size, equal=True, locality_hints=worker_node_ids)
        return [{"train": it} for it in shards]


def guide_loop():
    rows = []
    for _ in range(2):
        for batch in train.get_dataset_shard("train").iter_batches(local_shuffle_buffer_size=16, batch_size=4,
                                                                  prefetch_batches=2):
            rows += [float(x) for x in batch["normalized"]]
    train.report({"n": len(rows), "max": max(rows)})


def test_the_data_loading_guides_custom_config_and_preprocessing(ray_cluster, run_config):
    def normalize(batch):
        batch["normalized"] = batch["length"] / 10.0
        return batch

    ds = ray.data.from_items([{"length": float(i)} for i in range(10)]).map_batches(normalize)
    result = TorchTrainer(guide_loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=run_config(name="guide", cluster="ray"), datasets={"train": ds},
                          dataset_config=OnlyTrainSplit()).fit()
    assert result.metrics["n"] == 10  # 5 rows per rank per epoch, 2 epochs
    assert result.metrics["max"] <= 0.9
