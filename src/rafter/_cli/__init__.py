"""The ``rafter`` command: ``rafter run job.yaml``, ``rafter check job.yaml``, ``rafter results PATH``,
``rafter completion bash|zsh|tcsh``, ``rafter --version``.

Modules: ``jobfile`` (read, merge, check), ``schema`` (the keys), ``translate`` (config classes'
errors in job terms), ``loader`` (the train function), ``trackers`` (``run.callbacks``),
``progress`` (live output), ``summary`` (closing lines, ``--json``), ``cmd_*`` (the commands),
``completion`` (shell completion scripts, through shtab).
Nothing is imported or run until ``main()`` is called.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

JOB_HELP = "a YAML job file (see examples/quickstart.yaml)"
SET_HELP = ("override one value, KEY=VALUE with KEY a dotted path, e.g. --set scaling.num_workers=8 "
            "(repeatable; the value is read as YAML). Precedence: defaults < job file < --set flags")
# What shell completion offers for an argument (shtab reads an action's `complete` attribute; these
# are shtab.FILE and shtab.DIRECTORY, written out so that building the parser needs no shtab).
_FILES = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
_DIRECTORIES = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rafter",
        description="Run PyTorch training jobs described in YAML, with Ray Train's API underneath.",
    )
    from rafter import __version__

    parser.add_argument("--version", action="version", version=f"rafter {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="train: rafter run job.yaml [--set key=value ...]")
    run.add_argument("job", help=JOB_HELP).complete = _FILES
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    run.add_argument("--print-config", action="store_true",
                     help="print the merged job (and who set each value) and exit without running")
    out = run.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print the final Result as JSON on stdout (progress goes to stderr)")
    out.add_argument("--quiet", "-q", action="store_true",
                     help="no progress, summary or worker stdout (errors still go to stderr; logs are kept)")
    run.add_argument("--no-live", action="store_true", help="plain progress lines even on a terminal")
    run.add_argument("--progress-every", type=float, default=1.0, metavar="SECONDS",
                     help="plain progress: at most one report line per this many seconds (default 1)")

    check = commands.add_parser("check", help="preflight a job without training")
    check.add_argument("job", help=JOB_HELP).complete = _FILES
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    check.add_argument("--collective", action="store_true",
                       help="also start the real worker group and run one all-reduce across it")

    results = commands.add_parser("results", help="show a past run: verdict, metrics, checkpoints")
    results.add_argument("path", help="the run folder, <storage_path>/<run name>").complete = _DIRECTORIES
    results.add_argument("--json", action="store_true", help="the Result as JSON")

    completion = commands.add_parser(
        "completion", help="print a shell completion script: source <(rafter completion bash)",
        description="Print a completion script for SHELL on stdout. bash: add `source <(rafter completion "
                    "bash)` to ~/.bashrc. zsh: save `rafter completion zsh` as ~/.zfunc/_rafter and put "
                    "`fpath=(~/.zfunc $fpath)` before compinit in ~/.zshrc. Needs shtab (pip install shtab, "
                    "or the cli extra).")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"], metavar="SHELL", help="bash, zsh or tcsh")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        from rafter._cli.completion import completion_command

        return completion_command(parser, args.shell)
    if args.command == "run":
        from rafter._cli.cmd_run import run_command

        return run_command(args)
    if args.command == "check":
        from rafter._cli.cmd_check import check_command

        return check_command(args)
    from rafter._cli.cmd_results import results_command

    return results_command(args)
