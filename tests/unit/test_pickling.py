import sys
import threading

import pytest

from rafter._util.pickling import SerializationError, dumps_payload, dumps_return_value, find_unpicklable


def test_paths_through_dicts_lists_objects_and_closures():
    lock = threading.Lock()

    class Holder:
        def __init__(self):
            self.items = [1, lock]

    def fn(config):
        return lock

    assert find_unpicklable({"h": Holder()}, "cfg") == [
        ("cfg['h'].items[1]", "_thread.lock", "TypeError: cannot pickle '_thread.lock' object")]
    with pytest.raises(SerializationError) as info:
        dumps_payload(fn, {"ok": 1})
    assert "train_loop_per_worker.<closure lock>: _thread.lock" in str(info.value)


def test_return_value_errors_name_the_path():
    with pytest.raises(SerializationError, match=r"return_value\['gen'\]: generator"):
        dumps_return_value({"gen": (i for i in range(2))})


def test_serialization_error_pickles():
    import pickle

    err = SerializationError("x", [("p", "t", "e")], "fix")
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.problems == [("p", "t", "e")]


def test_functions_touching_torch_config_modules_pickle():
    """cloudpickle alone fails here: `torch.distributed` + a `.config` attribute drags in a
    torch ConfigModule (a ModuleType subclass). rafter's pickler sends such modules by name."""
    import pickle

    import cloudpickle
    import torch  # noqa: F401

    from rafter._util.pickling import dumps

    ns = {"__name__": "a_script_that_is_not_importable", "torch": torch}
    exec("def f(model):\n    torch.distributed.is_available()\n    return model.config\n", ns)
    with pytest.raises(Exception):
        cloudpickle.dumps(ns["f"])
    f = pickle.loads(dumps(ns["f"]))

    class Model:
        config = {"hidden": 4}

    assert f(Model()) == {"hidden": 4}


def test_a_train_function_from_a_module_workers_cannot_import_travels_by_value(tmp_path):
    import pickle
    import subprocess

    from rafter._util.pickling import dumps_payload

    (tmp_path / "outside_sys_path_mod.py").write_text("def train_func(config):\n    return config['x'] * 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import outside_sys_path_mod
    finally:
        sys.path.remove(str(tmp_path))
    payload = dumps_payload(outside_sys_path_mod.train_func, {"x": 21})
    code = "import pickle, sys; fn, cfg = pickle.loads(sys.stdin.buffer.read()); print(fn(cfg))"
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True)
    assert out.stdout.strip() == b"42"
    assert pickle.loads(payload)[0].__module__ == "outside_sys_path_mod"
