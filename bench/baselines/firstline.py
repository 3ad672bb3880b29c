"""Extract the first meaningful error line a user sees from a failed torchrun or
Ray Train run (combined stdout+stderr text).

    from firstline import first_error_line, extract
    first_error_line(text)          # -> str | None
    extract(text)                   # -> dict with the details below

    python bench/baselines/firstline.py LOG...      # prints one JSON object per log
    python bench/baselines/firstline.py --selftest  # checks the stored real outputs

Rules (see NOTES.md for the real outputs they were written against):

torchrun: the "Root Cause (first observed failure)" block of the ChildFailedError
  summary that torchrun prints last. first_line is that block folded into one line:
  "rank R (local_rank: L) exitcode E: <traceback field>", e.g.
  "rank 1 (local_rank: 1) exitcode -9 (pid: 30249) (SIGKILL): Signal 9 (SIGKILL) received by PID 30249".
  Without @record in the script the traceback field is only the boilerplate
  "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html".
  `worker_exception` additionally gives the first "[rankN]: XxxError: ..." line the
  ranks themselves printed above the summary (not part of the summary).

Ray Train: the exception that trainer.fit() raised in the driver (the last
  un-prefixed "ray.train.XxxError: ..." line, i.e. TrainingFailedError and
  subclasses). `headline` is that line. When its message is only the generic header
  ("Training failed due to worker errors:" / "... controller error:"), first_line
  descends into the body: the first "[Rank N Error Snippet]:" block's exception line
  (last "XxxError: ..." line of its traceback) or, for a snippet without a
  traceback, its first line; for a controller error, the first body line.
  Prefixed "[Rank N] " when it comes from a snippet.
  `worker_exception` gives the first "(RayTrainWorker pid=...) XxxError: ..." line.
  If fit() never raised (run killed while Ray Train kept retrying), the first
  ray.train exception printed by the TrainController actor is used instead
  (`from_driver` is False then).
"""
import json
import re
import sys
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_PREFIX = re.compile(r"^\((?:[\w.]+) pid=\d+(?:, ip=[\d.]+)?\) ?")
_REPEATED = re.compile(r"\s*\[repeated \d+x across cluster\].*$")
# "SomeError: msg" / "pkg.mod.SomeError: msg" / "SomeException" at line start
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Failure)\b:?.*$")


def _clean(text):
    return [_REPEATED.sub("", _ANSI.sub("", l)).rstrip() for l in text.splitlines()]


def _ws(s):
    return re.sub(r"\s+", " ", s).strip()


def detect_tool(text):
    if "Root Cause (first observed failure)" in text or "ChildFailedError" in text:
        return "torchrun"
    if re.search(r"ray\.train\.\w*Error|TrainController pid=|RayTrainWorker", text):
        return "ray"
    return None


def _torchrun(lines):
    out = {"tool": "torchrun", "headline": None, "first_line": None,
           "root_cause": None, "worker_exception": None}
    for l in lines:
        m = re.match(r"^\[rank\d+\]: (.*)$", l)
        if m and _EXC_LINE.match(m.group(1)) and not m.group(1).startswith("Traceback"):
            out["worker_exception"] = l
            break
    for l in lines:
        if "ChildFailedError" in l:
            out["headline"] = l.strip()
    try:
        start = max(i for i, l in enumerate(lines) if l.startswith("Root Cause (first observed failure)"))
    except ValueError:
        return out
    fields = {}
    for l in lines[start + 1:]:
        if l.startswith("====="):
            break
        m = re.match(r"^\s+(\w+)\s*: ?(.*)$", l)
        if m:
            fields[m.group(1)] = _ws(m.group(2))
    out["root_cause"] = fields
    if fields:
        out["first_line"] = (f"rank {fields.get('rank', '?')} exitcode {fields.get('exitcode', '?')}: "
                             f"{fields.get('traceback', '')}").strip()
    return out


def _ray(lines):
    out = {"tool": "ray", "headline": None, "first_line": None, "worker_exception": None}
    for l in lines:
        if l.startswith("(RayTrainWorker"):
            body = _RAY_PREFIX.sub("", l)
            if _EXC_LINE.match(body):
                out["worker_exception"] = body
                break
    # The driver's traceback lines carry no "(Actor pid=N)" prefix; take the last
    # ray exception raised there (normally from trainer.fit()).
    ray_exc = re.compile(r"^ray\.(?:train\.|exceptions\.)?[\w.]*(?:Error|Exception)\b")
    idx = [i for i, l in enumerate(lines) if ray_exc.match(l)]
    out["from_driver"] = bool(idx)
    if not idx:
        # fit() never returned (e.g. a run killed while Ray Train kept retrying):
        # fall back to the first ray exception the controller actor printed.
        lines = [_RAY_PREFIX.sub("", l) if l.startswith("(TrainController") else "\0" + l
                 for l in lines]
        idx = [i for i, l in enumerate(lines) if ray_exc.match(l)][:1]
        if not idx:
            return out
    i = idx[-1]
    out["headline"] = lines[i]
    body = []
    for l in lines[i + 1:]:
        if _RAY_PREFIX.match(l) or l.startswith(("FIT_WALL_S=", "\0")):
            break
        body.append(l)
    header_only = lines[i].rstrip().endswith(":")
    if not header_only:
        out["first_line"] = lines[i]
        return out
    # Descend into the first rank snippet, or the first body line.
    for j, l in enumerate(body):
        m = re.match(r"^\[Rank (\d+) Error Snippet\]:", l)
        if m:
            snippet = []
            for s in body[j + 1:]:
                if re.match(r"^\[Rank \d+ Error Snippet\]:", s):
                    break
                snippet.append(s)
            text = [s for s in snippet if s.strip()]
            if any(s.startswith("Traceback") for s in text):
                exc = [s for s in text if _EXC_LINE.match(s) and not s.startswith(" ")]
                line = exc[-1] if exc else text[-1]
            else:
                line = text[0] if text else "(empty snippet)"
            out["first_line"] = f"[Rank {m.group(1)}] {line.strip()}"
            return out
    rest = [l for l in body if l.strip()]
    out["first_line"] = rest[0].strip() if rest else lines[i]
    return out


def extract(text, tool=None):
    tool = tool or detect_tool(text)
    lines = _clean(text)
    if tool == "torchrun":
        return _torchrun(lines)
    if tool == "ray":
        return _ray(lines)
    exc = [l for l in lines if _EXC_LINE.match(l)]
    return {"tool": None, "headline": exc[0] if exc else None,
            "first_line": exc[0] if exc else None, "worker_exception": None}


def first_error_line(text, tool=None):
    return extract(text, tool)["first_line"]


# Expected results on the real outputs stored in sample_outputs/ (see NOTES.md).
_EXPECTED = {
    "torchrun_diagnose_sigkill.log": r"^rank 1 \(local_rank: 1\) exitcode -9 \(pid: \d+\) \(SIGKILL\): Signal 9 \(SIGKILL\) received by PID \d+$",
    "torchrun_diagnose_exception.log": r"^rank 1 \(local_rank: 1\) exitcode 1 \(pid: \d+\): To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html$",
    "raytrain_diagnose_sigkill.log": r"^\[Rank 0\] RuntimeError: .*gloo.*(Connection reset by peer|Connection closed by peer)",
    "raytrain_diagnose_exception.log": r"^\[Rank 1\] RuntimeError: boom at step 3$",
}


def _selftest():
    d = Path(__file__).with_name("sample_outputs")
    ok = True
    for name, pat in _EXPECTED.items():
        r = extract((d / name).read_text(errors="replace"))
        good = bool(r["first_line"] and re.search(pat, r["first_line"]))
        ok &= good
        print(("ok  " if good else "FAIL"), name, "->", r["first_line"])
    print("selftest:", "all ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        sys.exit(_selftest())
    for p in sys.argv[1:]:
        print(json.dumps({"file": p, **extract(Path(p).read_text(errors="replace"))}))
