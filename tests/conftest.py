import os
import threading
import time

import psutil
import pytest

from tests.ray.cluster_fixtures import ray_cluster  # noqa: F401  - a Ray cluster per test module that asks

os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every fit() forks its zygote from this process when that is safe, and the zygote preloads
# torch._dynamo (which any torch optimizer imports): doing that import here once makes each of the
# suite's ~150 fits start like a driver that already built an optimizer, instead of paying ~1 s each.
import torch._dynamo  # noqa: E402,F401

THREAD_GRACE_S = 5.0  # how long a test's threads get to end after it (a closing callback's flush, ...)
# Set by libraries themselves, once per process, the first time a feature is used (not a test's doing).
LIBRARY_ENV = {
    "PYTEST_CURRENT_TEST",  # pytest's own
    "TORCHINDUCTOR_CACHE_DIR",  # torch._inductor's default cache folder, on its first import
    "PYTHONBREAKPOINT", "RAY_CLIENT_MODE",  # ray.init(), in the Ray cluster fixture
}
# Threads libraries start once per process and keep (their own singletons), by name prefix.
LIBRARY_THREADS = (
    "Otel",  # OpenTelemetry's exporters, which wandb starts
    "ray_", "PythonGCThread",  # ray.init()'s, in the Ray cluster fixture
    "fsspecIO",  # fsspec's event loop for async filesystems: started once per process, never stopped
)


def pytest_collection_modifyitems(config, items):
    """Run the tests that start Ray last: once Ray is imported, a driver can no longer fork its zygote
    (Ray's native state does not survive fork), so every later fit would start a fresh interpreter."""
    def uses_ray(item):
        return "ray" in item.nodeid.split("::")[0].split("/") or "[ray" in item.nodeid
    items.sort(key=uses_ray)  # stable: the order within each half is kept


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Fail a test that leaves any process of its own behind (workers, zygotes, drivers)."""
    from rafter._backends.local import warm

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    warm.close()  # the zygote a fit() keeps warm for the next one in this process
    leftover = [p for p in me.children(recursive=True) if p.pid not in before]
    gone, alive = psutil.wait_procs(leftover, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, f"processes outlived the test: {[(p.pid, p.name()) for p in alive]}"


@pytest.fixture(autouse=True)
def no_leaked_environment_or_threads():
    """Fail a test that changes os.environ for the tests after it (use monkeypatch.setenv), or leaves a
    Python thread running (join what you start). Session and module fixtures (the Ray cluster) that are
    set up before this snapshot and torn down after it own what they start."""
    env = dict(os.environ)
    threads = set(threading.enumerate())
    yield
    changed = sorted(k for k in set(env) | set(os.environ)
                     if env.get(k) != os.environ.get(k) and k not in LIBRARY_ENV)
    for k in changed:  # the next test starts clean either way
        if k in env:
            os.environ[k] = env[k]
        else:
            del os.environ[k]
    deadline = time.monotonic() + THREAD_GRACE_S
    for thread in set(threading.enumerate()) - threads:
        if not thread.name.startswith(LIBRARY_THREADS):
            thread.join(max(0.0, deadline - time.monotonic()))
    alive = sorted(t.name for t in set(threading.enumerate()) - threads
                   if t.is_alive() and not t.name.startswith(LIBRARY_THREADS))
    assert changed == [], f"the test left environment variables changed: {changed}"
    assert alive == [], f"threads outlived the test: {alive}"


@pytest.fixture
def run_config(tmp_path):
    from rafter.train import RunConfig

    def make(**kwargs):
        kwargs.setdefault("storage_path", str(tmp_path / "results"))
        kwargs.setdefault("name", "run")
        return RunConfig(**kwargs)

    return make
