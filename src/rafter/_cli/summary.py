"""What the CLI says about a finished (or failed) run: the closing summary and the ``--json`` document."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, TextIO

from rafter._cli.progress import format_duration, format_metrics
from rafter._storage import is_uri


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def first_line(error: Optional[BaseException]) -> Optional[str]:
    return str(error).split("\n", 1)[0] if error is not None else None


def result_json(result, *, status: str, error: Optional[BaseException] = None,
                elapsed_s: Optional[float] = None) -> Dict[str, Any]:
    """The final Result as plain JSON: metrics, paths, return value (when JSON-able), error and attempts."""
    error = error if error is not None else result.error
    doc: Dict[str, Any] = {
        "status": status,
        "metrics": json.loads(json.dumps(result.metrics, default=repr)) if result.metrics is not None else None,
        "num_reports": len(result.metrics_history),
        "path": result.path,
        "checkpoint": result.checkpoint.path if result.checkpoint is not None else None,
        "checkpoints": [c.path for c, _m in result.best_checkpoints],
        "return_value": result.return_value if _jsonable(result.return_value) else None,
        "error": first_line(error),
        "attempts": json.loads(json.dumps(result.attempts, default=repr)),
    }
    if result.return_value is not None and not _jsonable(result.return_value):
        doc["return_value_repr"] = repr(result.return_value)[:1000]
    if elapsed_s is not None:
        doc["elapsed_s"] = round(elapsed_s, 3)
    return doc


def describe(result, *, status: str, error: Optional[BaseException] = None,
             elapsed_s: Optional[float] = None) -> str:
    """A few readable lines: the verdict, and where the results, checkpoints and logs are."""
    error = error if error is not None else result.error
    attempts = len(result.attempts)
    reports = len(result.metrics_history)
    took = f" in {format_duration(elapsed_s)}" if elapsed_s is not None else ""
    counts = f"{reports} report{'s' if reports != 1 else ''}, {attempts} attempt{'s' if attempts != 1 else ''}"
    invocations = len({a.get("invocation", 1) for a in result.attempts})
    if invocations > 1:  # the driver was run again: not failures
        counts += f" in {invocations} invocations"
    if status == "finished":
        head = f"✓ finished{took}: {counts}"
    elif status == "failed":
        head = f"✗ failed{took} ({counts}): {first_line(error)}"
    else:
        head = f"… {status} ({counts}; the driver may still be running, or was killed)"
    lines = [head, f"  last metrics: {format_metrics(result.metrics, limit=12)}"]
    if result.path:
        lines.append(f"  results:      {result.path}")
        if not is_uri(result.path):
            lines.append(f"  metrics file: {os.path.join(result.path, 'metrics.jsonl')}")
    if result.checkpoint is not None:
        kept = len(result.best_checkpoints)
        lines.append(f"  checkpoint:   {result.checkpoint.path}  ({kept} kept)")
    else:
        lines.append("  checkpoint:   none (the train function reported no checkpoint)")
    if result.path and not is_uri(result.path):
        lines.append(f"  logs:         {os.path.join(result.path, 'logs')}")
    return "\n".join(lines)


def print_json(doc: Dict[str, Any], stream: TextIO) -> None:
    stream.write(json.dumps(doc, indent=2, default=repr) + "\n")
    stream.flush()
