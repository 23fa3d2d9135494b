"""One job, start to finish: read, check, upscale, write, tidy the original.

The worker decides what an error means (retry with backoff, fail, pause the account); the
backend and helpers only raise. Completion (outputs placed, original handled, job marked
done) is the worker's ``Completer`` (daemon/completion.py), run shielded from cancellation,
so a shutdown never loses finished work.

    Dispatcher ─► Worker.process ─► read, check ─► budget reserved ─► Backend.upscale
                        │                                                  │
                        └─► Journal (retry / failed / arriving)  Completer.complete
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import logs
from ..backends.base import Backend, ResultImage, SubmitTrail, UpscaleRequest
from ..config import Config, FitTarget, FolderConfig
from ..days import local_midnight
from ..errors import (
    INCOMPLETE_KIND,
    AccountError,
    FalUnreachable,
    JobError,
    OutputBlockedError,
    PermanentJobError,
    RetryableError,
    StillArriving,
)
from ..images import output, preflight, provenance, unscaled
from ..images.pixels import PixelPool
from ..images.source import open_source
from ..intake import arrival
from ..jobs import Job, JobState, Settings
from ..journal import JournalBase, LeaseLost
from .completion import Completer, unchanged
from .requeue import retry_command

log = logs.get(__name__)
#: Seconds before a job turned away by the budget asks again (others may free a reservation).
BUDGET_RECHECK = 60.0


class _Superseded(Exception):
    """The source changed or vanished; the job is dropped (a new version is tracked)."""


class _FolderGone(Exception):
    """The inbox itself is missing (share unmounted): wait, do not judge the file."""


#: Locks that keep identical jobs' starts apart (see ``Worker._twin_locks``).
TWIN_LOCK_STRIPES = 64


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


@dataclass
class JobCallbacks:
    """What the worker asks of the service, without knowing it."""

    retouch: Callable[[str, Path], None]  # the file changed: track it again
    account_error: Callable[[AccountError], None]  # pause every submission
    budget_full: Callable[[], None] = lambda: None  # no reservation left for today


def settings_for(config: Config, folder: FolderConfig, backend: str) -> Settings:
    """The settings a new job of ``folder`` runs with on ``backend``."""
    return Settings(backend, folder.scale_factor, folder.creativity, folder.output_format,
                    "" if backend == "local" else config.fal.result_format, folder.dpi,
                    fit=folder.fit.plain() if folder.fit else None)


def named_for(folder: FolderConfig, rel: str, made: provenance.Provenance, path: Path) -> bool:
    """Whether ``path`` has the name the output of the file at ``rel`` gets (any of the
    first results' names) at the scale ``made`` records."""
    try:
        scale = float(made.Scale)
        ext = path.suffix.lstrip(".")
        return any(output.render_name(folder, rel, scale=scale, ext=ext, index=i) == path
                   for i in range(4))
    except (ValueError, JobError):
        return False


class Worker:
    """One job, start to finish, on the backend it is given.

    Given the config (``Service`` replaces ``config`` on reload; jobs not started yet use
    the new one), the journal, the backend, the service's ``JobCallbacks`` and the pixel
    pool. Owns the locks that keep identical jobs' starts apart, and its ``Completer``.
    """

    def __init__(self, config: Config, journal: JournalBase, backend: Backend, hooks: JobCallbacks,
                 pixels: PixelPool | None = None):
        self.config, self.journal, self.backend, self.hooks = config, journal, backend, hooks
        self.pixels = pixels or PixelPool(config.pixels.workers, config.pixels.memory_mb)
        self.completer = Completer(lambda: self.config, journal, self.pixels,
                                   charges=backend.name != "local")
        #: Striped by content hash: a job's start and its look for an identical job in flight
        #: run one at a time for the same content, so copies taken together all wait for the
        #: same job (the first to start) instead of for each other in a chain. A fixed number
        #: of locks: nothing to clean up, and unrelated files rarely share one.
        self._twin_locks = [asyncio.Lock() for _ in range(TWIN_LOCK_STRIPES)]
        #: What the outboxes already hold, by the provenance in each output (read once).
        self._outbox_index = provenance.OutboxIndex()
        self._outbox_lock = asyncio.Lock()

    async def process(self, job: Job) -> JobState:
        folder = self.config.folder(job.folder)
        if folder is None:  # removed by a reload; stays queued until it comes back
            return (await self.journal.requeue(job)).state
        if job.request_id and job.settings:
            # Already at the backend: finish with the settings it was submitted with, even if
            # a reload changed the folder since (new settings apply to new submissions).
            settings = Settings(**job.settings)
            folder = dataclasses.replace(folder, scale_factor=settings.scale_factor,
                                         creativity=settings.creativity,
                                         output_format=settings.output_format,
                                         dpi=settings.dpi,
                                         fit=FitTarget.from_plain(settings.fit))
        else:
            settings = settings_for(self.config, folder, self.backend.name)
        async with self._twin_locks[hash(job.sha256) % TWIN_LOCK_STRIPES]:
            job = await self.journal.start(job, settings.__dict__, settings.key())
            earlier = leader = None
            if not (job.request_id or job.outputs or job.pending):
                earlier = await self._done_twin(job, settings)
                # Copies arriving together (sync conflicts, a folder copied in twice) are
                # paid for once: wait for an identical job in flight, then copy its output.
                if earlier is None:
                    leader = await self.journal.wait_for_twin(job, settings.key())
        bound = log.bind(job_id=job.id, folder=job.folder, file=job.rel)
        if not (job.request_id or job.outputs or job.pending) and leader is not None:
            bound.info("job_waiting_for_twin", same_as_job=leader.id,
                       note="an identical file with the same settings is in flight; its "
                            "output will be copied when it is done")
            return JobState.QUEUED
        started = time.monotonic()
        bound.info("job_started", attempt=job.attempts + 1, backend=self.backend.name,
                   resume=bool(job.request_id or job.pending or job.outputs))
        try:
            if job.outputs or job.pending:
                return await asyncio.shield(self.completer.resume(job, folder, bound))
            if not job.request_id:
                found = await self._in_outbox(job, folder, settings)
                if found:
                    return await asyncio.shield(self.completer.found_in_outbox(
                        job, folder, found, bound, started))
            data = await asyncio.to_thread(self._read_source, job, folder)
            if earlier is not None and all(Path(p).exists() for p in earlier.outputs):
                bound.info("job_deduplicated", same_as_job=earlier.id,
                           same_as_folder=earlier.folder,
                           note="identical content and settings were processed before; "
                                "copying that output instead of upscaling again")
                results = [ResultImage(path=Path(p)) for p in earlier.outputs]
                return await asyncio.shield(self.completer.complete(
                    job, folder, None, None, results, bound, started, copy=True))
            source = await self.pixels.run(
                functools.partial(arrival.inspect, data, folder, job,
                                  keep_pixels=self.backend.name == "local"),
                megapixels=preflight.declared_megapixels(data))
            plan = preflight.plan(source.width, source.height, folder.scale_factor, folder,
                                  source.target)
            if plan.reduced:
                bound.warning("scale_reduced", requested=plan.requested, used=plan.scale,
                              output=f"{plan.width}x{plan.height}")
            if source.frames > 1:
                bound.info("animated_first_frame_only", frames=source.frames)
            if source.conversions:
                bound.info("input_converted", changes=list(source.conversions))
            if source.meta.dropped:
                bound.warning("metadata_dropped", dropped=list(source.meta.dropped),
                              note="the output is written without it")
            if plan.as_is:
                return await asyncio.shield(self._keep_as_it_is(job, folder, data, source, plan,
                                                                bound, started))
            if not job.request_id and not await self._reserve_budget(job, plan):
                return (await self.journal.retry_later(job, delay=BUDGET_RECHECK, kind="budget",
                                                       reason="today's budget is spent",
                                                       count_attempt=False)).state
            alpha = await self._keep_alpha(job, source)

            async def on_submitted(request_id: str) -> None:
                nonlocal job
                job = await self.journal.submitted(job, request_id)

            async def on_forgotten() -> None:
                nonlocal job
                job = await self.journal.forget_request(job)

            request = UpscaleRequest(
                job_id=job.id, source=source, data=data, source_name=job.path.name, plan=plan,
                creativity=folder.creativity, request_id=job.request_id,
                on_submitted=on_submitted, on_forgotten=on_forgotten,
                work_dir=self.config.state_dir / "work", pixels=self.pixels,
                result_format=self._result_format(source),
                trail=await self._trail(job, self._estimate(plan)))
            results = await self.backend.upscale(request)
            state = await asyncio.shield(self.completer.complete(
                job, folder, source, plan, results, bound, started, alpha=alpha))
            if job.request_id and hasattr(self.backend, "output_written"):
                await self.backend.output_written(job.request_id)
            return state
        except LeaseLost:
            # Our lease ran out (the journal was out of reach too long) and another daemon
            # holds the job now: it resumes the journaled request; we touch nothing more.
            bound.warning("job_lease_lost", note="another daemon took the job over")
            return JobState.RUNNING
        except _Superseded as exc:
            bound.info("job_superseded", reason=str(exc))
            return (await self.journal.superseded(job, str(exc))).state
        except StillArriving as exc:
            return await self._wait_for_arrival(await self.journal.get(job.id), exc, bound)
        except _FolderGone:
            bound.warning("job_waiting_for_folder", inbox=str(folder.inbox))
            return (await self.journal.retry_later(
                job, delay=max(self.config.retry.backoff, 2.0), kind="folder_unavailable",
                reason="the inbox is not available", count_attempt=False)).state
        except PermanentJobError as exc:
            return await asyncio.shield(self._fresh(job, self._fail, folder, exc, bound))
        except AccountError as exc:
            self.hooks.account_error(exc)
            return (await self._fresh(job, self.journal.retry_later, delay=0, kind=exc.kind,
                                      reason=exc.reason, count_attempt=False)).state
        except OutputBlockedError as exc:
            # A full or read-only outbox is the machine's problem, not the file's: wait for
            # it as long as it takes, never fail the file for it.
            delay = self.config.retry.max_backoff
            bound.warning("job_waiting_for_outbox", reason=exc.reason, retry_in=delay)
            return (await self._fresh(job, self.journal.retry_later, delay=delay,
                                      kind=exc.kind, reason=exc.reason,
                                      count_attempt=False)).state
        except FalUnreachable as exc:
            # fal or the network is away: not the file's fault, so no attempt is counted
            # (the backend waits this out itself, behind its breaker, until a shutdown).
            bound.info("job_waiting_for_fal", reason=exc.reason,
                       request_id=(await self.journal.get(job.id)).request_id)
            return (await self._fresh(job, self.journal.retry_later,
                                      delay=max(self.config.retry.backoff, 2.0),
                                      kind=exc.kind, reason=exc.reason,
                                      count_attempt=False)).state
        except RetryableError as exc:
            return await asyncio.shield(self._fresh(job, self._retry, folder, exc, bound))
        except asyncio.CancelledError:
            # Shutdown: back to the queue, keeping any request id for the next start.
            await asyncio.shield(self._fresh(job, self.journal.requeue))
            bound.info("job_interrupted", note="resumes on next start")
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the file or stop the daemon
            bound.exception("job_internal_error")
            current = await self.journal.get(job.id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            if current.error_kind == "internal":
                # Twice in a row: the same input will keep failing the same way. Fail it with
                # the exception named rather than loop.
                return await asyncio.shield(self._fail(current, folder, PermanentJobError(
                    f"{reason} (also on the attempt before)", kind="internal"), bound))
            err = RetryableError(reason, kind="internal")
            return await asyncio.shield(self._retry(current, folder, err, bound))

    # -- steps ---------------------------------------------------------------------------

    async def _fresh(self, job: Job, step, *args, **kwargs):
        """Read the job again, then run ``step`` on it: both inside the caller's shield, so a
        cancellation cannot come between the read and the write."""
        return await step(await self.journal.get(job.id), *args, **kwargs)

    def _estimate(self, plan: preflight.Plan) -> float:
        """What fal bills for ``plan``'s output, in dollars."""
        return round(plan.width * plan.height / 1e6 * self.config.fal.price_per_megapixel, 6)

    async def _trail(self, job: Job, estimated_usd: float) -> SubmitTrail:
        """The journal's side of a submission whose answer may never arrive; a run it may
        have been billed for is recorded at ``estimated_usd``."""
        journal = self.journal

        async def sending(identity: str, sent_at: float) -> None:
            await journal.submit_sending(job, identity, sent_at)

        async def refused() -> None:
            await journal.submit_refused(job)

        async def given_up() -> None:
            await journal.submit_given_up(job, estimated_usd=estimated_usd)

        async def abandoned() -> None:
            await journal.run_abandoned(job, estimated_usd=estimated_usd)

        unanswered = None if job.request_id else await journal.unanswered_submit(job)
        return SubmitTrail(unanswered, sending, refused, given_up, abandoned)

    async def _keep_as_it_is(self, job: Job, folder: FolderConfig, data: bytes,
                             source: preflight.SourceImage, plan: preflight.Plan, bound,
                             started: float) -> JobState:
        """The picture meets the folder's fit target already: written as it is, unpaid."""
        assert folder.fit is not None
        bound.info("upscale_not_needed", size=f"{source.width}x{source.height}",
                   fit=folder.fit.describe(),
                   note="the picture already meets the folder's fit target; it is written "
                        "as it is and nothing is paid (fit.enlarge_only: false upscales it "
                        "at ×1)")
        work_file = self.config.state_dir / "work" / f"{job.id}-as-is"
        result = await self.pixels.run(
            functools.partial(unscaled.as_it_is, data, source, folder, work_file),
            megapixels=plan.megapixels)
        return await self.completer.complete(job, folder, source, plan, [result], bound, started)

    async def _reserve_budget(self, job: Job, plan: preflight.Plan) -> bool:
        """Reserve this submission's estimated cost in the journal, so that daemons sharing
        it cannot together spend past ``budget.daily_usd``."""
        limit = self.config.budget.daily_usd
        if limit is None or self.backend.name == "local":
            return True
        if await self.journal.reserve_budget(job, self._estimate(plan), limit=limit,
                                       since=local_midnight(time.time())):
            return True
        self.hooks.budget_full()
        return False

    async def _in_outbox(self, job: Job, folder: FolderConfig,
                         settings: Settings) -> list[Path]:
        """Outputs already in the folder's outbox that name this file's content and settings
        (a journal lost or restored from an older backup): the outbox is indexed once."""
        async with self._outbox_lock:  # one index per outbox, however many jobs ask at once
            return await asyncio.to_thread(self._outbox_index.find, folder.outbox, job.sha256,
                                           settings.key(), job.rel, functools.partial(
                                               named_for, folder, job.rel))

    async def _done_twin(self, job: Job, settings: Settings) -> Job | None:
        """A finished job with the same content and settings whose outputs are still there."""
        earlier = await self.journal.find_done_output(job.folder, job.sha256, settings.key())
        if earlier and earlier.outputs and all(Path(p).exists() for p in earlier.outputs):
            return earlier
        return None

    def _read_source(self, job: Job, folder: FolderConfig) -> bytes:
        try:
            st = os.stat(job.path, follow_symlinks=False)
        except FileNotFoundError:
            if not folder.inbox.is_dir():
                raise _FolderGone() from None
            raise _Superseded("the file disappeared before it was processed") from None
        if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns):
            self.hooks.retouch(job.folder, job.path)
            raise _Superseded("the file changed after it was queued; the new version is queued")
        try:
            with open_source(job.path) as fh:
                data = fh.read()
        except PermissionError:
            raise RetryableError("the file cannot be read (permission denied)",
                                 kind="unreadable") from None
        except OSError as exc:
            raise RetryableError(f"the file cannot be read: {exc.strerror or exc}",
                                 kind="unreadable") from None
        if hashlib.sha256(data).hexdigest() != job.sha256:
            self.hooks.retouch(job.folder, job.path)
            raise _Superseded("the file's content changed after it was queued")
        return data

    def _result_format(self, source: preflight.SourceImage) -> str:
        """jpg when the folder writes JPEG (fal's bytes become the output), else png."""
        if self.config.fal.result_format == "auto" and source.target == "JPEG":
            return "jpg"
        return "png"

    async def _keep_alpha(self, job: Job, source: preflight.SourceImage) -> Path | None:
        """Save the input's alpha channel while the upscaler (which returns opaque RGB) runs;
        the local backend scales alpha itself."""
        if not source.has_alpha or self.backend.name == "local" or source.image is None:
            return None
        path = self.config.state_dir / "work" / f"{job.id}-alpha.png"

        def save(image=source.image) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.getchannel("A").save(path, "PNG", compress_level=1)

        await self.pixels.run(save, megapixels=source.width * source.height / 1e6)
        return path

    async def _wait_for_arrival(self, job: Job, exc: StillArriving, bound) -> JobState:
        """Nothing moved, nothing submitted: a change to the file brings a new version, and
        otherwise the job is looked at again when the grace ends."""
        if job.error_kind != INCOMPLETE_KIND:  # said once, not at every look
            bound.info("file_incomplete_waiting", reason=exc.reason,
                       gives_up_in=round(max(0.0, exc.until - time.time()), 1),
                       note="taken to be still arriving; any change to it starts over")
        return (await self.journal.arriving(job, until=exc.until, kind=exc.kind,
                                            reason=exc.reason)).state

    async def _retry(self, job: Job, folder: FolderConfig, exc: RetryableError, bound) -> JobState:
        attempts = job.attempts + 1
        if attempts >= self.config.retry.attempts:
            reason = f"gave up after {attempts} attempts: {exc.reason}"
            return await self._fail(job, folder, PermanentJobError(reason, kind=exc.kind), bound,
                                    attempts=attempts)
        delay = max(self.config.retry.delay(attempts), exc.delay or 0)
        bound.warning("job_retry_scheduled", error=exc.kind, reason=exc.reason, attempt=attempts,
                      of=self.config.retry.attempts, retry_in=round(delay, 1))
        return (await self.journal.retry_later(job, delay=delay, kind=exc.kind,
                                               reason=exc.reason)).state

    async def _fail(self, job: Job, folder: FolderConfig, exc: JobError, bound,
                    attempts: int | None = None) -> JobState:
        attempts = job.attempts + 1 if attempts is None else attempts
        where = folder.failed_dir / job.rel
        moved: Path | None = None
        if unchanged(job):
            try:
                moved = output.move_file(job.path, where)
                await self.journal.moved_source(job, moved)
            except OSError as exc_move:
                bound.warning("original_not_moved_to_failed", error=str(exc_move))
        report_path = (moved or where).with_name(
            output.fit_name((moved or where).name + ".error.json"))
        report = {
            "file": job.path.name, "folder": job.folder, "original": str(moved or job.path),
            "error": exc.kind, "reason": exc.reason, "attempts": attempts,
            "backend": self.backend.name, "request_id": job.request_id,
            "first_seen": _iso(job.created_at), "failed_at": _iso(time.time()),
            "hint": "fix the cause, then run the command in \"retry\"",
            "retry": retry_command(self.config.path, moved or job.path),
        }
        try:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(report, indent=2, ensure_ascii=False)  # names as they are
            tmp = output.write_temp(report_path, text.encode() + b"\n", f"{job.id}-error")
            os.replace(tmp, report_path)
        except (OSError, JobError) as exc_write:
            bound.warning("error_report_not_written", error=str(exc_write))
        job = await self.journal.failed(job, kind=exc.kind, reason=exc.reason, attempts=attempts)
        bound.error("job_failed", error=exc.kind, reason=exc.reason, attempts=attempts,
                    moved_to=str(moved) if moved else None)
        return job.state
