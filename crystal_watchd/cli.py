"""Command line: ``crystal-watchd init|run|once|check|status|retry|retry-hooks|notify-test|
approve|journal``. The only place that exits.

Exit codes: 0 ok, 1 job failures (``once``), a refused start, a config ``init`` would
overwrite or a fal ``check --online`` cannot reach, 2 usage, 78 config error (or a key fal
refuses, or a damaged SQLite journal: every command that opens it), 75 (``once``) nothing
failed but a file still arriving was left for the next run or pictures are held for approval
by the spend guard (nothing spent on them);
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
from .errors import ConfigError, JournalDamaged, LockedError

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
    _subcommand(sub, "run", parents=[common, backend],
                   help="watch and process until stopped (SIGTERM/SIGINT)")
    once = _subcommand(sub, "once", parents=[common, backend],
                          help="process what is in the inboxes now, then exit (1 if any file "
                               "failed, 75 if one still arriving was left for the next run or "
                               "pictures are held for approval)")
    once.add_argument("--approve", action="store_true",
                      help="spend even when the pictures waiting are estimated above "
                           "budget.confirm_above_usd (without it, once holds them and exits 75)")
    loudness = once.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="on a terminal, print every job's log lines too")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="print only warnings and errors")
    init = _subcommand(sub, "init", parents=[common],
                          help="write a commented starter config and make its folders "
                               "(never overwrites)")
    init.add_argument("--inbox", type=Path, help="the watched folder (default: "
                                                 "~/crystal-watchd/inbox)")
    init.add_argument("--outbox", type=Path, help="where results go (default: "
                                                  "~/crystal-watchd/outbox)")
    init.add_argument("--scale", type=_within(1, 200), default=2.0,
                      help="scale factor, 1 to 200 (default 2)")
    init.add_argument("--creativity", type=_within(0, 10), default=0.0,
                      help="creativity, 0 to 10 (default 0)")
    check = _subcommand(sub, "check", parents=[common],
                           help="validate the config; on a terminal, a summary and warnings, "
                                "else the effective settings as JSON")
    check.add_argument("--json", action="store_true",
                       help="print the effective settings as JSON (the default off a terminal)")
    check.add_argument("--online", action="store_true",
                       help="also prove the fal key with one free call to fal")
    status = _subcommand(sub, "status", parents=[common], help="queue, failures and spend, "
                                                              "from the journal (exit 3 if no "
                                                              "daemon is running)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    retry = _subcommand(sub, "retry", parents=[common],
                           help="put failed files (all, or the ones named) back in the queue")
    retry.add_argument("paths", nargs="*", metavar="PATH",
                       help="a failed file, by its path in failed_dir or where it was dropped "
                            "(none: every failed file)")
    _subcommand(sub, "notify-test", parents=[common],
                   help="send a test notification to every notify URL (1 if one fails)")
    hooks = _subcommand(sub, "retry-hooks", parents=[common],
                           help="try hook deliveries that gave up again (all, or the ids "
                                "'status' lists)")
    hooks.add_argument("ids", nargs="*", type=int, metavar="ID",
                       help="a delivery's id, as 'status' lists it (none: every one that "
                            "gave up)")
    approve = _subcommand(sub, "approve", parents=[common],
                             help="release the pictures the spend guard holds (all folders, or "
                                  "the ones named)")
    approve.add_argument("folders", nargs="*", metavar="FOLDER",
                         help="a folder's name, as in the config (none: every folder)")
    journal = _subcommand(sub, "journal", parents=[common],
                             help="check, recover, export or import the journal")
    moves = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    export = _subcommand(moves, "export", parents=[common],
                              help="write every job of the configured journal to a file")
    export.add_argument("file", type=Path, help="JSON lines file to write ('-': stdout)")
    imp = _subcommand(moves, "import", parents=[common],
                           help="add the jobs of an export file to the configured journal")
    imp.add_argument("file", type=Path, help="JSON lines file from 'journal export'")
    _subcommand(moves, "check", parents=[common],
                help="check the journal file with SQLite's integrity check and list its "
                     "backups (78 if it is damaged)")
    _subcommand(moves, "rebuild", parents=[common],
                help="journal as done every inbox file whose output the outbox already holds "
                     "(its provenance names the file and settings): nothing is paid again")
    _subcommand(moves, "recover", parents=[common],
                help="bring a damaged journal back from its newest good backup or what "
                     "SQLite salvages (the damaged file is kept, renamed aside)")
    return parser


def _subcommand(group, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose one-line help (in the list of commands) is also the description
    its own ``--help`` opens with."""
    text = kwargs["help"]
    return group.add_parser(name, description=text[0].upper() + text[1:] + ".", **kwargs)


def _within(lo: float, hi: float):
    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo:g} to {hi:g}, not {value:g}")
        return value
    return number


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
    if args.command == "init":
        return _init(args)
    try:
        config = _load(args)
    except ConfigError as exc:
        print("crystal-watchd: configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if config.journal:
        from .journal import postgres_missing

        problem = postgres_missing()
        if problem:  # PostgreSQL is an optional extra: say which one to install
            print(f"crystal-watchd: configuration error:\n  {config.path}: {problem}",
                  file=sys.stderr)
            return EXIT_CONFIG

    if args.command == "check":
        return _check(args, config)
    if args.command == "notify-test":
        return _notify_test(config)

    from .commands import status as status_mod
    from .daemon.service import journal_path
    from .journal import JournalUnavailable

    try:
        if args.command == "journal":
            return _journal(args, config)
        return _command(args, config, status_mod, journal_path)
    except JournalDamaged as exc:  # restarting cannot help: 78 stops a service manager
        from .commands.journalcare import damaged_lines

        print("\n".join(damaged_lines(exc, config)), file=sys.stderr)
        return EXIT_CONFIG
    except JournalUnavailable as exc:
        print(f"crystal-watchd: {exc}", file=sys.stderr)
        return EXIT_FAILURES


def _init(args: argparse.Namespace) -> int:
    from .commands.starter import AlreadyThere, init

    try:
        written = init(getattr(args, "config", None), args.inbox, args.outbox, args.scale,
                       args.creativity)
    except AlreadyThere as exc:
        print(f"crystal-watchd: {exc.args[0]} already exists and was left as it is; edit it, "
              "or give another path with --config", file=sys.stderr)
        return EXIT_FAILURES
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"crystal-watchd: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"crystal-watchd: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURES
    print(f"wrote {written.config}\n  inbox:  {written.inbox}\n  outbox: {written.outbox}\n"
          "next (with FAL_KEY set, or add --backend local to run without a key):")
    for command in written.next_commands:
        print(f"  {command}")
    return EXIT_OK


def _check(args: argparse.Namespace, config: config_mod.Config) -> int:
    from .commands import check as checkreport
    from .daemon.spendguard import backlog_lines
    from .images.formats import extension_warnings

    ctx = checkreport.Context(config)
    described = config.describe()
    # What each inbox already holds, and what it would cost (from the files' headers).
    backlog = backlog_lines(config, described)
    if args.json or not sys.stdout.isatty():
        print(json.dumps(described, indent=2))
        for line in backlog:
            print(line, file=sys.stderr)
    else:
        print("\n".join([*checkreport.summary(ctx), "", "Backlog:", *backlog]))
    for line in [*(f"{config.path}: {w}" for w in extension_warnings(config.folders)),
                 *checkreport.warnings(ctx)]:
        print(f"crystal-watchd: warning: {line}", file=sys.stderr)
    blockers = checkreport.blockers(ctx)
    for line in blockers:
        print(f"crystal-watchd: problem: {line}", file=sys.stderr)
    if _check_notify(config):
        return EXIT_CONFIG
    folders = f"{config.path} ({len(config.folders)} folder(s))"
    if blockers:
        print(f"config valid: {folders}; {len(blockers)} problem(s) to fix before `run` "
              "works", file=sys.stderr)
    else:
        print(f"config OK: {folders}", file=sys.stderr)
    code = _check_journal(config)
    if args.online and code == EXIT_OK:
        code = _check_online(config)
    return code


def _check_online(config: config_mod.Config) -> int:
    from .backends.key import read_key
    from .backends.probe import probe

    try:
        key = read_key(config.fal)
    except ConfigError as exc:
        print(f"crystal-watchd: --online: {exc.problems[0].message}", file=sys.stderr)
        return EXIT_CONFIG
    outcome, words = probe(key)
    if outcome == "accepted":
        print(f"online OK: {words}", file=sys.stderr)
        return EXIT_OK
    print(f"crystal-watchd: --online: {words}", file=sys.stderr)
    return EXIT_CONFIG if outcome == "refused" else EXIT_FAILURES


def _journal(args: argparse.Namespace, config: config_mod.Config) -> int:
    if args.journal_command in ("check", "recover", "rebuild"):
        from .commands import journalcare
        from .daemon.lock import StateLock

        if args.journal_command == "check":
            lines, code = journalcare.check(config)
        else:
            lock = StateLock(config.state_dir)
            try:
                lock.acquire()
            except LockedError as exc:
                print(f"crystal-watchd: {exc}; stop it before recovering", file=sys.stderr)
                return EXIT_FAILURES
            try:
                lines, code = (journalcare.recover(config) if args.journal_command == "recover"
                               else journalcare.rebuild(config))
            finally:
                lock.release()
        print("\n".join(lines), file=sys.stdout if code == EXIT_OK else sys.stderr)
        return code
    return _move_jobs(args, config)


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


def _check_notify(config: config_mod.Config) -> bool:
    """``check``: every notification URL must be one Apprise can use. True if one is not."""
    if config.notify is None:
        return False
    from .daemon.notify import invalid_urls

    problems = invalid_urls(config.notify)
    for problem in problems:
        print(f"crystal-watchd: configuration error: {config.path}: notify: {problem}",
              file=sys.stderr)
    return bool(problems)


def _notify_test(config: config_mod.Config) -> int:
    if config.notify is None:
        print("crystal-watchd: no notify: section in the configuration", file=sys.stderr)
        return EXIT_CONFIG
    if _check_notify(config):
        return EXIT_CONFIG
    from .daemon.notify import Message, send

    logs.configure(config.log.format, config.log.level)
    ok = send(config.notify, Message("crystal-watchd: test notification",
                                     f"Notifications from crystal-watchd ({config.path}) "
                                     "reach you."))
    print("sent" if ok else "crystal-watchd: at least one notification could not be sent "
          "(see the log line above)", file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAILURES


def _check_journal(config: config_mod.Config) -> int:
    """``check`` with a shared journal: can we reach and migrate it, and do the daemons on
    it treat the same folders the same way?"""
    if not config.journal:
        return EXIT_OK
    from .daemon.shared import disagreements
    from .journal import JournalUnavailable, open_journal

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
        unmatched: list[str] = []
        for line in status_mod.retry(config, journal_path(config), args.paths, unmatched):
            print(f"retrying {line}")
        for path in unmatched:
            print(f"no failed job matches {path} (see `crystal-watchd status` for the failed "
                  "files, by their path in failed_dir or where they were dropped)",
                  file=sys.stderr)
        return EXIT_FAILURES if unmatched else EXIT_OK
    if args.command == "retry-hooks":
        count = status_mod.retry_hooks(config, journal_path(config), args.ids)
        print(f"retrying {count} hook deliver{'y' if count == 1 else 'ies'}")
        return EXIT_OK
    if args.command == "approve":
        from .daemon.spendguard import approve_command

        lines, ok = approve_command(config, args.folders)
        print("\n".join(lines))
        return EXIT_OK if ok else EXIT_FAILURES

    from .daemon.service import run_service
    from .events import Events

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

        from .commands.terminal import ConsoleStream, JobLinesFilter, ProgressView

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
    from .daemon.spendguard import held_lines
    from .journal import open_journal

    journal = open_journal(config, readonly=not config.journal)
    try:
        lines = held_lines(journal, [f.name for f in config.folders])
    finally:
        journal.close()
    if not lines:  # 75 for a file still arriving, with nothing held: nothing to name here
        return
    print("crystal-watchd: nothing was spent on these pictures: estimated above "
          f"budget.confirm_above_usd (${config.budget.confirm_above_usd:g}); run "
          "`crystal-watchd once --approve` to spend it:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
