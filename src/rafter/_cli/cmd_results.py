"""``rafter results PATH``: a past run's verdict, metrics (last and count), checkpoints, and its
invocations (each run of the driver) with their attempts (restarts after failures).

Exit code: 0 for a finished run, 1 for a failed (or unfinished) one, 2 when PATH is not a run folder.
"""

from __future__ import annotations

import sys

from rafter._cli.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

CAUSES = {"start": "first start", "restart": "restart after a failure", "new invocation": "driver run again"}


def owner_line(run_path: str) -> str:
    """Whether the driver of a run marked running is alive (it holds the run folder's lock) or gone."""
    from rafter._run_lock import describe, holder
    from rafter._storage import Storage

    rec = holder(Storage(run_path), run_path)
    if rec is None:
        return "  driver:       none holds this run folder; run the script again to resume it"
    if rec["alive"]:
        return f"  driver:       running: {describe(rec)}"
    return f"  driver:       gone: {describe(rec)} was killed or crashed; run the script again to resume it"


def attempt_lines(attempts, invocations):
    """Attempts grouped by invocation: restarts after failures told apart from separate runs of the driver."""
    lines = []
    by_invocation = {}
    for attempt in attempts:
        by_invocation.setdefault(attempt.get("invocation", 1), []).append(attempt)
    status = {i.get("invocation"): i.get("status") for i in invocations}
    for number in sorted(by_invocation):
        lines.append(f"  invocation {number}: {status.get(number, 'unknown')}")
        for attempt in by_invocation[number]:
            verdict = attempt.get("error") or "ok"
            cause = CAUSES.get(attempt.get("cause"), attempt.get("cause") or "start")
            lines.append(f"    attempt {attempt.get('attempt')} ({cause}), from report {attempt.get('first_report')}: "
                         f"{verdict}")
    return lines


def results_command(args) -> int:
    from rafter import _run_folder
    from rafter._cli.progress import format_metrics
    from rafter._cli.summary import describe, print_json, result_json
    from rafter.train import Result, TrainingFailedError

    path = args.path
    try:
        record = _run_folder.read(path)
    except _run_folder.RunFolderError as exc:
        print(f"rafter: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, ValueError) as exc:
        print(f"rafter: {exc}\n  fix: give a run folder, <storage_path>/<run name>, e.g. "
              f"rafter results ~/rafter_results/my_run", file=sys.stderr)
        return EXIT_CONFIG
    error = TrainingFailedError(record.error_text or record.error or "failed") if record.status == "failed" else None
    result = Result.from_record(record, error=error)
    status = record.status
    if args.json:
        doc = result_json(result, status=status)
        doc["invocations"] = record.invocations
        print_json(doc, sys.stdout)
    else:
        out = sys.stdout
        out.write(describe(result, status=status) + "\n")
        if status == "running":
            out.write(owner_line(record.path) + "\n")
        if result.best_checkpoints:
            out.write("  checkpoints:\n")
            for checkpoint, metrics in result.best_checkpoints:
                out.write(f"    {checkpoint.path.rstrip('/').rsplit('/', 1)[-1]}  {format_metrics(metrics)}\n")
        for line in attempt_lines(result.attempts, record.invocations):
            out.write(line + "\n")
        if result.error is not None and "\n" in str(result.error):
            out.write("\n" + str(result.error).rstrip() + "\n")
    return EXIT_OK if status == "finished" else EXIT_FAILED
