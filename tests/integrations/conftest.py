import pytest


@pytest.fixture(autouse=True)
def no_tqdm_monitor_thread(monkeypatch):
    """Progress bars (transformers loading or saving weights in this process) would start tqdm's monitor
    thread, and with another thread running rafter no longer forks its workers from the test process:
    every later test would import torch, transformers and lightning again in its workers."""
    try:
        import tqdm
    except ImportError:
        return
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
