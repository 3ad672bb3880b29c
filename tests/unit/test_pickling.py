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
    with pytest.raises(SerializationError, match=r"return_value\['gen'\]: generator") as info:
        dumps_return_value({"gen": (i for i in range(2))})
    first = str(info.value).splitlines()[0]
    assert first == ("return_value['gen'] (generator) can't be pickled, so rafter can't send the train "
                     "function's return value to the driver:")


def test_the_first_line_names_the_first_path_and_its_type():
    with pytest.raises(SerializationError) as info:
        dumps_payload(lambda c: None, {"lock": threading.Lock(), "gen": (i for i in range(2))})
    first = str(info.value).splitlines()[0]
    assert first == ("train_loop_config['lock'] (_thread.lock) can't be pickled (and 1 more, below), so rafter "
                     "can't send the train function and its train_loop_config to the workers:")


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


def test_code_sent_by_value_keeps_its_file_name_and_source_where_the_file_is_missing(tmp_path):
    """A worker on another machine (or a notebook cell) has no file to read: the source travels along."""
    import os
    import subprocess

    from rafter._util.pickling import dumps_payload

    script = tmp_path / "my_train_script.py"
    script.write_text("def train_func(config):\n    total = config['x']\n    raise ValueError(f'bad {total}')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import my_train_script
    finally:
        sys.path.remove(str(tmp_path))
    payload = dumps_payload(my_train_script.train_func, {"x": 3})
    os.remove(script)
    code = ("import pickle, sys, traceback\nfn, cfg = pickle.loads(sys.stdin.buffer.read())\n"
            "try:\n    fn(cfg)\nexcept ValueError:\n    print(traceback.format_exc())\n")  # as workers do
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True)
    err = out.stdout.decode()
    assert f'File "{script}", line 3, in train_func' in err
    assert "raise ValueError(f'bad {total}')" in err and "<dynamic-code>" not in err
