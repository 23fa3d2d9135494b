"""Command line: ``crystal-watchd run|once|check|status|retry|approve|journal``. The only
place that exits.

Exit codes: 0 ok, 1 job failures (``once``) or a refused start, 2 usage, 75 pictures held
for approval by the spend guard (``once``; nothing spent on them), 78 config error;
``status`` exits 3 when no daemon is running (as LSB init scripts do), so health checks can
rely on its exit code alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, logs
from . import config as config_mod
from .config import mask_url
from .errors import ConfigError, LockedError

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78
EXIT_NOT_RUNNING = 3
EXIT_HELD = 75


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", type=Path, default=argparse.SUPPRESS,
                        help="config file (default: $CRYSTAL_WATCHD_CONFIG, else "
                             "~/.config/crystal-watchd/config.yaml, or /etc/crystal-watchd/"
                             "config.yaml as root)")
    parser = argparse.ArgumentParser(prog="crystal-watchd", parents=[common],
                                     description="Watch inbox folders and upscale every new "
                                                 "image with Crystal Upscaler.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=config_mod.BACKENDS,
                         help="override the config's backend (local works offline, no key)")
    sub.add_parser("run", parents=[common, backend],
                   help="watch and process until stopped (SIGTERM/SIGINT)")
    once = sub.add_parser("once", parents=[common, backend],
                          help="process what is in the inboxes now, then exit (1 if any file "
                               "failed)")
    once.add_argument("--approve", action="store_true",
                      help="spend even when the pictures waiting are estimated above "
                           "budget.confirm_above_usd (without it, once holds them and exits 75)")
    loudness = once.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="on a terminal, print every job's log lines too")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="print only warnings and errors")
    sub.add_parser("check", parents=[common], help="validate the config and print the "
                                                   "effective settings per folder")
    status = sub.add_parser("status", parents=[common], help="queue, failures and spend, "
                                                              "from the journal (exit 3 if no "
                                                              "daemon is running)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    retry = sub.add_parser("retry", parents=[common],
                           help="put failed files (all, or the ones named) back in the queue")
    retry.add_argument("paths", nargs="*", metavar="PATH")
    approve = sub.add_parser("approve", parents=[common],
                             help="release the pictures the spend guard holds (all folders, or "
                                  "the ones named)")
    approve.add_argument("folders", nargs="*", metavar="FOLDER")
    journal = sub.add_parser("journal", parents=[common],
                             help="move jobs between the SQLite journal and PostgreSQL")
    moves = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    export = moves.add_parser("export", parents=[common],
                              help="write every job of the configured journal to a file")
    export.add_argument("file", type=Path, help="JSON lines file to write ('-': stdout)")
    imp = moves.add_parser("import", parents=[common],
                           help="add the jobs of an export file to the configured journal")
    imp.add_argument("file", type=Path, help="JSON lines file from 'journal export'")
    return parser


def _load(args: argparse.Namespace) -> config_mod.Config:
    path = getattr(args, "config", None) or config_mod.default_config_path()
    config = config_mod.load(path)
    return config.with_backend(getattr(args, "backend", None))


def main(argv: list[str] | None = None) -> int:
    # File names need not be valid UTF-8; never let printing one crash a command.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        config = _load(args)
    except ConfigError as exc:
        print("crystal-watchd: configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check":
        from .spendguard import backlog_lines

        described = config.describe()
        backlog = backlog_lines(config, described)
        print(json.dumps(described, indent=2))
        from .formats import extension_warnings

        for line in extension_warnings(config.folders):
            print(f"crystal-watchd: warning: {config.path}: {line}", file=sys.stderr)
        print(f"config OK: {config.path} ({len(config.folders)} folder(s))", file=sys.stderr)
        for line in backlog:
            print(line, file=sys.stderr)
        return _check_journal(config)

    from . import status as status_mod
    from .journal import JournalUnavailable
    from .service import journal_path

    try:
        if args.command == "journal":
            return _move_jobs(args, config)
        return _command(args, config, status_mod, journal_path)
    except JournalUnavailable as exc:
        print(f"crystal-watchd: {exc}", file=sys.stderr)
        return EXIT_FAILURES


def _move_jobs(args: argparse.Namespace, config: config_mod.Config) -> int:
    from .journal.transfer import export_file, import_file

    try:
        if args.journal_command == "export":
            count = export_file(config, args.file)
            print(f"exported {count} job(s)", file=sys.stderr)
        else:
            imported, skipped = import_file(config, args.file)
            print(f"imported {imported} job(s), skipped {skipped} already there",
                  file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"crystal-watchd: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


def _check_journal(config: config_mod.Config) -> int:
    """``check`` with a shared journal: can we reach and migrate it, and do the daemons on
    it treat the same folders the same way?"""
    if not config.journal:
        return EXIT_OK
    from .journal import JournalUnavailable, open_journal
    from .shared import disagreements

    try:
        journal = open_journal(config)
    except JournalUnavailable as exc:
        print(f"crystal-watchd: journal: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    try:
        problems = disagreements(config, journal)
    finally:
        journal.close()
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    print(f"journal OK: {mask_url(config.journal)}", file=sys.stderr)
    return EXIT_OK


def _command(args, config, status_mod, journal_path) -> int:
    if args.command == "status":
        report = status_mod.collect(config, journal_path(config))
        print(json.dumps(report, indent=2) if args.json else status_mod.render(report))
        return EXIT_OK if report["daemon_running"] else EXIT_NOT_RUNNING
    if args.command == "retry":
        for line in status_mod.retry(config, journal_path(config), args.paths):
            print(f"retrying {line}")
        return EXIT_OK
    if args.command == "approve":
        from .spendguard import approve_command

        lines, ok = approve_command(config, args.folders)
        print("\n".join(lines))
        return EXIT_OK if ok else EXIT_FAILURES

    from .events import Events
    from .service import run_service

    once = args.command == "once"
    level = config.log.level
    if once and args.quiet:
        level = "warning"
    elif once and args.verbose and level in ("warning", "error"):
        level = "info"
    events = Events()
    view = None
    if once and sys.stderr.isatty() and config.log.format != "json":
        from rich.console import Console

        from .terminal import ConsoleStream, JobLinesFilter, ProgressView

        console = Console(stderr=True)
        logs.configure("console", level, stream=ConsoleStream(console),
                       filters=() if args.verbose else (JobLinesFilter(),))
        view = ProgressView(config, events, console)
    else:
        logs.configure(config.log.format, level)
    try:
        if view is not None:
            with view:
                code = run_service(config, once=once, progress=view.update, events=events,
                                   approve=once and args.approve)
        else:
            code = run_service(config, once=once, events=events, approve=once and args.approve)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"crystal-watchd: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except LockedError as exc:
        print(f"crystal-watchd: {exc}", file=sys.stderr)
        return EXIT_FAILURES
    if once and code == EXIT_HELD:
        _print_held(config)
    return code


def _print_held(config: config_mod.Config) -> None:
    """``once`` held pictures for approval: name each with its estimate, and the way on."""
    from .journal import open_journal
    from .spendguard import held_lines

    journal = open_journal(config, readonly=not config.journal)
    try:
        lines = held_lines(journal, [f.name for f in config.folders])
    finally:
        journal.close()
    print("crystal-watchd: nothing was spent on these pictures: estimated above "
          f"budget.confirm_above_usd (${config.budget.confirm_above_usd:g}); run "
          "`crystal-watchd once --approve` to spend it:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
