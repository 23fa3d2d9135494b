"""One error tree, branched by what the caller does with it.

    CrystalWatchdError
    ├── ConfigError            the settings cannot be used: report every problem, exit 78
    ├── LockedError            another daemon holds the journal: refuse to start
    ├── JournalError           the journal itself, not a job
    │   ├── JournalUnavailable cannot be reached, opened or migrated: say why, exit 78
    │   │   └── JournalDamaged the SQLite file is corrupt: name it and the recovery, exit 78
    │   ├── LeaseLost          another daemon took this job over: leave it alone
    │   └── IllegalTransition  a state change the job's state table forbids: a bug, not
    │                          a job's fault; the row is left as it was
    └── JobError               something went wrong with one job
        ├── RetryableError     try the same job again later (carries its delay)
        │   ├── OutputBlockedError   the outbox cannot take the file right now
        │   └── FalUnreachable       fal or the way there is away (not the picture's
        │                            fault): wait behind the breaker, no attempt counted
        ├── StillArriving      the file may still be being written: look again later,
        │                      no attempt counted
        ├── PermanentJobError  this job can never succeed: fail it, keep the original
        │   └── ConversionError      the result cannot be written in the folder's format:
        │                            keep a paid result in its own format, else fail
        └── AccountError       the backend account refuses all work: pause everything

The worker decides what happens; backends and helpers only raise.
"""

from __future__ import annotations

from dataclasses import dataclass


class CrystalWatchdError(Exception):
    """Base of every error the daemon raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        # a problem with no file (a missing key, say) has no empty field before its message
        where = f"{self.file}:{self.line}" if self.file and self.line else self.file
        head = ": ".join(part for part in (where, self.key) if part)
        return f"{head}: {self.message}" if head else self.message


class ConfigError(CrystalWatchdError):
    """The configuration cannot be used. Carries every problem found, not just the first."""

    exit_code = 78  # EX_CONFIG from sysexits.h; systemd units stop restarting on it

    def __init__(self, problems: list[ConfigProblem] | ConfigProblem | str):
        if isinstance(problems, str):
            problems = [ConfigProblem(file="", line=None, key="", message=problems)]
        elif isinstance(problems, ConfigProblem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class LockedError(CrystalWatchdError):
    """Another crystal-watchd process already owns this state directory."""


class JournalError(CrystalWatchdError):
    """Something is wrong with the journal as a whole, not with one job."""


class JournalUnavailable(JournalError):
    """The journal cannot be reached or migrated; the message is fit to print (no password)."""


class JournalDamaged(JournalUnavailable):
    """The SQLite journal file is damaged (SQLite's own check fails, or it cannot be read as
    a database). Restarting cannot help: the caller names the file, what is wrong and the
    command that recovers it, and exits 78 so a service manager stops restarting."""

    exit_code = 78

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"the journal {path} is damaged: {problem}")


class LeaseLost(JournalError):
    """This daemon's lease on a job ran out and another daemon took the job over: leave it
    alone (its request id is journaled; the other daemon resumes it)."""


class IllegalTransition(JournalError):
    """A job's state was to change along an edge ``jobs.TRANSITIONS`` does not have (done
    back to running, say). Nothing was written: the row keeps the state it had."""

    def __init__(self, job_id: int | None, before: str, after: str):
        self.job_id, self.before, self.after = job_id, before, after
        which = f"job {job_id}" if job_id is not None else "a job"
        super().__init__(f"{which} cannot change from {before} to {after}")


class JobError(CrystalWatchdError):
    """Something went wrong while processing one job."""

    #: Short, stable, machine-readable kind, e.g. ``not_an_image``; lands in the journal.
    kind: str = "error"

    def __init__(self, reason: str, *, kind: str | None = None):
        super().__init__(reason)
        self.reason = reason
        if kind is not None:
            self.kind = kind


class RetryableError(JobError):
    """A transient failure: the same job may succeed later.

    ``delay`` is a lower bound on the wait the server asked for (Retry-After), if any;
    the worker's backoff applies on top of it.
    """

    kind = "transient"

    def __init__(self, reason: str, *, kind: str | None = None, delay: float | None = None):
        super().__init__(reason, kind=kind)
        self.delay = delay


class OutputBlockedError(RetryableError):
    """The outbox is full, read-only or missing; the job waits, the original stays."""

    kind = "output_blocked"


class FalUnreachable(RetryableError):
    """fal or the network to it is away (refused, reset, DNS, TLS, timeouts, 502/503/504,
    429): nothing about the picture. The backend waits for the reachability probe and
    tries the same call again; a job that meets it anyway waits without counting an
    attempt."""

    kind = "fal_unreachable"


#: ``error_kind`` of a job whose file may still be being written.
INCOMPLETE_KIND = "file_incomplete"


class StillArriving(JobError):
    """The input cannot be used yet and may still be being written: look again ``until``,
    without counting an attempt."""

    kind = INCOMPLETE_KIND

    def __init__(self, reason: str, until: float):
        super().__init__(reason)
        self.until = until


class PermanentJobError(JobError):
    """The job cannot succeed as it is (bad image, rejected input): fail it with a reason."""

    kind = "permanent"


class ConversionError(PermanentJobError):
    """An encoder or a read-back refused the output; retrying would fail the same way."""

    kind = "conversion"


class AccountError(JobError):
    """The backend refuses the account (bad key, locked, no balance): pause every submission."""

    kind = "account"

    def __init__(self, reason: str, *, kind: str | None = None, delay: float | None = None):
        super().__init__(reason, kind=kind)
        self.delay = delay
