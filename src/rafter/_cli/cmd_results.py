"""``rafter results PATH``: a past run's verdict, metrics (last and count) and checkpoints.

Exit code: 0 for a finished run, 1 for a failed (or unfinished) one, 2 when PATH is not a run folder.
"""

from __future__ import annotations

import sys

from rafter._cli.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK


def run_status(path: str) -> str:
    from rafter._controller.run_state import STATE_FILE
    from rafter._storage import Storage

    parent, _, name = path.rstrip("/").rpartition("/")
    storage = Storage(parent or ".")
    try:
        return str(storage.read_json(storage.join(name, STATE_FILE)).get("status", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def results_command(args) -> int:
    from rafter._cli.progress import format_metrics
    from rafter._cli.summary import describe, print_json, result_json
    from rafter.train import Result

    path = args.path
    try:
        result = Result.from_path(path)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"rafter: {exc}\n  fix: give a run folder, <storage_path>/<run name>, e.g. "
              f"rafter results ~/rafter_results/my_run", file=sys.stderr)
        return EXIT_CONFIG
    status = run_status(path)
    if args.json:
        print_json(result_json(result, status=status), sys.stdout)
    else:
        out = sys.stdout
        out.write(describe(result, status=status) + "\n")
        if result.best_checkpoints:
            out.write("  checkpoints:\n")
            for checkpoint, metrics in result.best_checkpoints:
                out.write(f"    {checkpoint.path.rstrip('/').rsplit('/', 1)[-1]}  {format_metrics(metrics)}\n")
        for attempt in result.attempts:
            verdict = attempt.get("error") or "ok"
            out.write(f"  attempt {attempt.get('attempt')}: from report {attempt.get('first_report')}: {verdict}\n")
        if result.error is not None and "\n" in str(result.error):
            out.write("\n" + str(result.error).rstrip() + "\n")
    return EXIT_OK if status == "finished" else EXIT_FAILED
