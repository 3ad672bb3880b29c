"""cgroup-v1 memory cgroups for tests that need the kernel's OOM killer for real."""

import contextlib
import os


def own_memory_cgroup():
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.strip().split(":", 2)
                if controllers == "memory":
                    base = f"/sys/fs/cgroup/memory{path}"
                    probe = os.path.join(base, f"rafter-probe-{os.getpid()}")
                    os.mkdir(probe)
                    os.rmdir(probe)
                    return base
    except OSError:
        return None
    return None


@contextlib.contextmanager
def small_cgroup(name, limit=600 * 2**20):
    """A child memory cgroup of ours with a small limit; processes that join it are OOM-killed over it."""
    cg = os.path.join(own_memory_cgroup(), f"{name}-{os.getpid()}")
    os.mkdir(cg)
    try:
        for knob in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            try:
                with open(os.path.join(cg, knob), "w") as f:
                    f.write(str(limit))
            except OSError:
                pass
        yield cg
    finally:
        try:
            os.rmdir(cg)
        except OSError:
            pass
