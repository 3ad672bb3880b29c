"""Live progress of a run, as a rafter Callback.

On a terminal with ``rich`` installed: a small live table (attempt, reports, rate, elapsed, latest
metrics, latest checkpoint) that worker output scrolls above. Otherwise (CI, a log file, or no
``rich``): plain ``[rafter] ...`` lines, a report line at most every ``every_s`` seconds.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Deque, Dict, Optional, TextIO

from rafter.train._callback import Callback
from rafter.train.callbacks import scalar_metrics

RATE_WINDOW_S = 10.0
MAX_METRICS_SHOWN = 8


def format_metrics(metrics: Optional[Dict[str, Any]], limit: int = MAX_METRICS_SHOWN) -> str:
    if not metrics:
        return "(none)"
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, (int, str, bool)) or value is None:
            parts.append(f"{key}={value}")
        elif isinstance(value, dict):
            parts.extend(f"{k}={v:.4g}" for k, v in scalar_metrics(value, prefix=f"{key}/"))
        else:
            parts.append(f"{key}=<{type(value).__name__}>")
    shown = parts[:limit]
    if len(parts) > limit:
        shown.append(f"... (+{len(parts) - limit})")
    return " ".join(shown)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rich_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("rich") is not None and importlib.util.find_spec("rich.live") is not None
    except (ImportError, ValueError):
        return False


class ProgressCallback(Callback):
    """Shows a run's progress on ``stream``; ``live=True`` uses a rich live display (needs a terminal)."""

    def __init__(self, stream: TextIO, *, live: bool, every_s: float = 1.0) -> None:
        self.stream = stream
        self.live = live and rich_available()
        self.every_s = every_s
        self.start = time.time()
        self.attempt = 0
        self.attempt_start = self.start
        self.num_workers = 0
        self.run_path = ""
        self.reports = 0
        self.attempt_reports = 0
        self.metrics: Optional[Dict[str, Any]] = None
        self.checkpoint: Optional[str] = None
        self._times: Deque[float] = collections.deque()
        self._last_line = 0.0
        self._live = None

    # -- numbers -------------------------------------------------------------------------------
    def rate(self, now: float) -> float:
        """Reports per second over the last ``RATE_WINDOW_S`` seconds of this attempt."""
        while self._times and now - self._times[0] > RATE_WINDOW_S:
            self._times.popleft()
        span = min(RATE_WINDOW_S, now - self.attempt_start)
        return len(self._times) / span if span > 0.05 and self._times else 0.0

    # -- hooks ---------------------------------------------------------------------------------
    def on_attempt_start(self, *, attempt: int, num_workers: int, run_path: str) -> None:
        self.attempt, self.num_workers, self.run_path = attempt, num_workers, run_path
        self.attempt_reports = 0
        self.attempt_start = time.time()
        self._times.clear()
        if self.live:
            self._start_live()
        else:
            self._line(f"attempt {attempt}: starting {num_workers} worker{'s' if num_workers != 1 else ''}; "
                       f"run folder {run_path}")

    def after_report(self, *, metrics: Dict[str, Any], rank: int, run_path: str) -> None:
        now = time.time()
        self.reports += 1
        self.attempt_reports += 1
        self.metrics = metrics
        self._times.append(now)
        if self.live:
            return  # the live display re-reads these numbers on each refresh
        if self.attempt_reports == 1 or now - self._last_line >= self.every_s:
            self._last_line = now
            rate = self.rate(now)
            rate_text = f", {rate:.1f} reports/s" if rate else ""
            self._line(f"report {self.reports} (attempt {self.attempt}{rate_text}, {format_duration(now - self.start)}): "
                       f"{format_metrics(metrics)}")

    def on_checkpoint(self, *, checkpoint, metrics: Dict[str, Any], run_path: str) -> None:
        self.checkpoint = checkpoint.path
        if not self.live:
            self._line(f"checkpoint {checkpoint.path.rstrip('/').rsplit('/', 1)[-1]} saved at report {self.reports}")

    def on_failure(self, *, error, run_path: str) -> None:
        self._stop_live()
        first = str(error).split("\n", 1)[0]
        self._line(f"attempt {self.attempt} failed after {self.attempt_reports} report"
                   f"{'s' if self.attempt_reports != 1 else ''}: {first}")

    def on_end(self, *, result, run_path: str) -> None:
        self._stop_live()

    def close(self) -> None:
        """Stop the live display, whatever happened (the CLI calls it after ``fit()``)."""
        self._stop_live()

    # -- output --------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.stream.write(f"[rafter] {text}\n")
        self.stream.flush()

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._stop_live()
        console = Console(file=self.stream)
        self._live = Live(_LiveView(self), console=console, refresh_per_second=4, transient=True,
                          redirect_stdout=True, redirect_stderr=True)
        self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()


class _LiveView:
    """Rebuilt on every refresh of the live display, so elapsed time and rate keep moving."""

    def __init__(self, progress: ProgressCallback) -> None:
        self.p = progress

    def __rich__(self):
        from rich.table import Table

        p = self.p
        now = time.time()
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        rate = p.rate(now)
        table.add_row("rafter", f"attempt {p.attempt} · {p.num_workers} workers · {format_duration(now - p.start)} elapsed")
        table.add_row("reports", f"{p.reports}" + (f"  ({rate:.1f}/s)" if rate else ""))
        table.add_row("metrics", format_metrics(p.metrics))
        table.add_row("checkpoint", p.checkpoint or "none yet")
        return table
