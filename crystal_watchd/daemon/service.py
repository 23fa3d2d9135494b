"""The daemon's life cycle: lock, journal, backend, workers, the page, signals, reload and
shutdown; what the web page asks of the running daemon. ``Service`` builds its parts and
joins them through their constructors:

    FolderIntake: watchdog, scans ─► Settler ─► hash ─► Journal (queued) ─► Running.wake
    Dispatcher.run ◄─ Running.wake ◄────────────────────────────────────────────┘
        └─► Worker.process (≤ concurrency × PREPARE_AHEAD at once)
                └─► Completer ─► Journal (done / failed / retry)
    StatusLine ─► systemd (STATUS=, READY=1, WATCHDOG=1)

Intake is in daemon/folders.py, dispatch in daemon/dispatch.py, the shared run state
(in-flight jobs, the pause, unavailable folders, the wake-up) in daemon/running.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import backends, logs, web
from .. import config as config_mod
from ..backends.base import Backend
from ..backends.reachability import Outage
from ..config import Config
from ..errors import ConfigError
from ..events import Events
from ..images.pixels import PixelPool, give_freed_memory_back
from ..intake.watcher import OverflowHook
from ..journal import describe as describe_journal
from ..journal import journal_file, open_store
from ..waits import event_set
from ..web.view import waiting_for_fal
from .dispatch import Dispatcher
from .folders import FolderIntake, create_dirs
from .hooks import Deliverer
from .lock import StateLock
from .notify import Alerts
from .requeue import retry_jobs
from .running import REACHABILITY_FILE, Running
from .shared import SharedSlots, keep_alive, register
from .spendguard import SpendGuard
from .systemd import Notifier, StatusLine, status_text
from .worker import JobCallbacks, Worker

log = logs.get(__name__)
#: ``once``: nothing failed, but a file still arriving was left for the next run (EX_TEMPFAIL,
#: so cron wrappers and systemd tell "try again later" from a failure).
EXIT_LEFT_ARRIVING = 75
#: ``once`` ends with pictures held for approval: nothing was spent on them (EX_TEMPFAIL).
EXIT_HELD = 75
#: Seconds the daemon's own loops get to end once cancelled at shutdown (they take none).
LOOPS_STOP_WITHIN = 10.0


def journal_path(config: Config) -> Path:
    return journal_file(config)


class Service:
    """The daemon's life cycle and what the page asks of it.

    Given the config, ``once`` (work through what is there, then exit), the notifier, the
    backend factory, ``progress`` (``once``'s terminal view), the events and ``approve``.
    Owns the config (replaced on reload) and, while ``run`` runs, everything it builds: the
    journal, backend, pixel pool, alerts, hook deliveries, spend guard, ``FolderIntake``,
    ``Dispatcher``, ``Worker`` and ``StatusLine``, and the ``Running`` state they share.
    """

    def __init__(self, config: Config, *, once: bool = False, notifier: Notifier | None = None,
                 backend_factory: Callable[[Config], Backend] = backends.create,
                 progress: Callable[[dict[str, int]], None] | None = None,
                 events: Events | None = None, approve: bool = False):
        self.config = config
        #: ``once --approve``: what the spend guard would hold is spent.
        self._approve_all = approve
        #: Every job change the journal commits; the web page and the terminal view read it.
        self.events = events or Events()
        self.once = once
        self.notifier = notifier or Notifier()
        self._backend_factory = backend_factory
        self._progress = progress
        self.running = Running()
        self.status = StatusLine(self.notifier, self._status_text,
                                 muted=lambda: self.running.stopping)
        self._stop = asyncio.Event()
        #: ``once`` gave up waiting: the account is refused or the budget is spent.
        self._stalled = False
        #: ``once``: files still arriving, left for the next run (never waited out).
        self._left_arriving: list[str] = []
        self._held_at_exit = False

    # -- life cycle ------------------------------------------------------------------------

    def _build(self) -> None:
        """The parts, each given what it needs (the journal is open, the loop running)."""
        config = self.current_config
        self.journal.hooks = self.config.hooks
        self.deliverer = Deliverer(self.journal, config)
        self.events.subscribe(self.deliverer.on_change)
        self.alerts = Alerts(lambda: self.config.notify, self.journal)
        self.events.subscribe(self.alerts.on_change)
        self.backend = self._backend_factory(self.config)
        reachability = getattr(self.backend, "reachability", None)
        if reachability is not None:
            reachability.listeners.append(self._fal_reachability)
        if self.journal.shared and self.backend.name != "local":
            # Requests at the upscaler are counted over every daemon on the journal.
            self.backend.slots = SharedSlots(self.journal, self.config.concurrency)
        give_freed_memory_back()
        self.pixels = PixelPool(self.config.pixels.workers, self.config.pixels.memory_mb)
        self.intake = FolderIntake(config, self.journal, self.alerts, self.running,
                                   status_changed=self.status.changed, once=self.once)
        self.guard = SpendGuard(self.journal, config, self.intake.incoming,
                                approve_all=self._approve_all)
        self.dispatcher = Dispatcher(config, self.journal, self.guard, self.alerts, self.running,
                                     charges=self.backend.name != "local",
                                     status_changed=self.status.changed)
        self.worker = Worker(self.config, self.journal, self.backend,
                             JobCallbacks(retouch=self.intake.retouch,
                                          account_error=self.dispatcher.account_error,
                                          budget_full=self.dispatcher.budget_full),
                             pixels=self.pixels)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        lock = StateLock(self.config.state_dir)
        lock.acquire()
        try:
            self.journal = await open_store(self.config, events=self.events)
            self.identity = await register(self.journal, self.config)
            # A start refused here (no fal key, say) took no work: it leaves no daemon row,
            # or ``status`` would list it as alive until its heartbeat went stale.
            self._build()
        except BaseException:
            await self._refused()
            lock.release()
            raise
        page = None
        overflow = OverflowHook(loop, self.intake.rescan_all)
        tasks: list[asyncio.Task] = []
        try:
            recovered = await self.journal.recover()
            if recovered:
                log.info("jobs_recovered", count=recovered, note="interrupted jobs resume")
            await self.guard.start()
            if not self.once:
                overflow.install()
                self._install_signals(loop)
            for folder in self.config.folders:
                self._start_folder(folder)
            if not self.once:
                page = await web.start(self)
            tasks = [asyncio.create_task(self.intake.settler.run(), name="settle"),
                     asyncio.create_task(self.dispatcher.run(self.worker.process),
                                         name="dispatch"),
                     asyncio.create_task(keep_alive(self.journal, self.current_config),
                                         name="heartbeat"),
                     asyncio.create_task(self.guard.log_backlog(self.intake.scans_done),
                                         name="backlog")]
            if not self.once:
                tasks.append(asyncio.create_task(self.intake.housekeeping(),
                                                 name="housekeeping"))
                tasks.append(asyncio.create_task(self.deliverer.run(), name="hooks"))
                tasks.append(asyncio.create_task(self.alerts.run(), name="notify"))
                if self.notifier.watchdog_interval:
                    tasks.append(asyncio.create_task(self.status.watchdog_pings(),
                                                     name="watchdog"))
            self.notifier.ready(await self._status_text())
            log.info("daemon_ready", folders=[f.name for f in self.config.folders],
                     backend=self.backend.name, concurrency=self.config.concurrency,
                     mode="once" if self.once else "run", daemon_id=self.identity.id,
                     journal=describe_journal(self.config))
            if self.once:
                await self._until_idle()
                # This run's deliveries now; one that fails is tried again by the next run.
                await self.deliverer.deliver_due()
            else:
                await self._stop.wait()
            await self._shutdown(tasks)
            await self.alerts.drain()
            if self.once:
                self._held_at_exit = bool(await self.journal.held(
                    [f.name for f in self.config.folders]))
        finally:
            for task in tasks:
                task.cancel()
            overflow.uninstall()
            self.intake.stop_watching()
            if page is not None:
                await page.stop()
            (self.config.state_dir / REACHABILITY_FILE).unlink(missing_ok=True)
            await self.backend.aclose()
            await self.deliverer.aclose()
            try:
                await self.journal.unregister_daemon()
            finally:
                await self.journal.close()
            lock.release()
        done, failed = self.dispatcher.done, self.dispatcher.failed
        log.info("daemon_stopped", done=done, failed=failed,
                 **({"left_arriving": self._left_arriving} if self._left_arriving else {}))
        return self._exit_code()

    async def _refused(self) -> None:
        """Undo what a start refused before it took work did to the journal."""
        journal = getattr(self, "journal", None)
        if journal is None:
            return
        try:
            await journal.unregister_daemon()
        finally:
            await journal.close()

    def _exit_code(self) -> int:
        if not self.once:
            return 0
        if self.dispatcher.failed or self._stalled:
            return 1
        if self._held_at_exit:
            return EXIT_HELD
        return EXIT_LEFT_ARRIVING if self._left_arriving else 0

    def _start_folder(self, folder: config_mod.FolderConfig) -> None:
        """Watch a folder whose inbox is there (made if it may be); else it waits as gone."""
        if create_dirs(folder, self.config.path):
            self.intake.start_folder(folder)
        else:
            self.intake.wait_for_inbox(folder)

    def request_stop(self, *, immediately: bool = False) -> None:
        running = self.running
        if running.stopping and immediately:
            log.warning("shutdown_forced")
            for task in running.inflight.values():
                task.cancel()
            return
        if not running.stopping:
            log.info("shutdown_requested", in_flight=len(running.inflight),
                     grace_seconds=self.config.shutdown_grace)
        running.stopping = True
        self._stop.set()
        running.wake.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        # A second Ctrl-C stops at once instead of waiting for the grace period.
        loop.add_signal_handler(signal.SIGINT, lambda: self.request_stop(immediately=True))

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        running = self.running
        running.stopping = True
        self.notifier.stopping()
        self.intake.stop_watching()
        for task in tasks:
            task.cancel()
        # A loop that ignores its cancellation is named, not waited for forever.
        ended, stuck = await asyncio.wait(tasks, timeout=LOOPS_STOP_WITHIN) if tasks \
            else (set(), set())
        for task in ended:
            if not task.cancelled() and task.exception() is not None:
                log.error("loop_crashed", loop=task.get_name(), error=repr(task.exception()))
        if stuck:
            log.error("shutdown_loops_stuck", loops=sorted(t.get_name() for t in stuck),
                      note="left behind; the shutdown goes on")
        for task in self.intake.tasks:
            task.cancel()  # not journaled yet: the next start's scan finds these files again
        reachability = getattr(self.backend, "reachability", None)
        if reachability is not None:
            reachability.release()  # jobs waiting for fal go back to the queue at once
        if running.inflight:
            log.info("waiting_for_jobs", in_flight=len(running.inflight),
                     grace_seconds=self.config.shutdown_grace)
            _, pending = await asyncio.wait(list(running.inflight.values()),
                                            timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self.intake.tasks, return_exceptions=True)

    async def _until_idle(self) -> None:
        """``once``: return when every file found has been settled, journaled and finished."""
        running, settler = self.running, self.intake.settler
        idle_before = False
        while not self._stop.is_set():
            # A folder waiting for its inbox is left for a run that finds it.
            mine = [f.name for f in self.config.folders if f.name not in running.unavailable]
            # A file still arriving is not waited for: cron runs us again, and by then it
            # is complete or its grace has run out and it is judged.
            later = await self.journal.arriving_later(mine, time.time())
            busy = (len(settler) or self.intake.tasks or running.inflight
                    or self.intake.scanning
                    or await self.journal.unfinished(mine) > len(later))
            if self._progress is not None:
                waiting = settler.by_folder()
                waiting.update(await self.journal.waiting_by_folder())
                self._progress(dict(waiting))
            # Idle at two looks in a row: the journal is read while the other tasks run,
            # so one look can fall between a file leaving one stage and showing in the next.
            idle_before, settled = not busy, idle_before and not busy
            if settled:
                self._left_arriving = [f"{job.folder}/{job.rel}" for job in later]
                if later:
                    log.warning("once_left_arriving", files=self._left_arriving,
                                note="still being written; the next run takes them")
                return
            # Waiting out an account pause or tomorrow's budget is for ``run``, not ``once``.
            blocked = (running.paused(time.time())
                       or await self.dispatcher.over_budget(time.time()))
            if blocked and not running.inflight and not self.intake.tasks and not len(settler):
                self._stalled = True
                log.error("once_stopped_early", queued=await self.journal.unfinished(mine),
                          note="files stay queued in the journal for the next run")
                return
            await event_set(self._stop, 0.2)

    def reload(self) -> None:
        """SIGHUP: re-read the config. Added folders start, removed ones stop, changed
        settings apply to jobs not started yet; in-flight work carries on. An invalid config
        is logged and the running one kept. Also lifts an account or budget pause."""
        if self.running.stopping:
            return
        self.notifier.reloading()
        old = self.config
        try:
            new = config_mod.load(old.path).with_backend(old.backend)
        except ConfigError as exc:
            log.error("reload_failed", problems=[str(p) for p in exc.problems],
                      note="keeping the running configuration")
            self.status.tell_ready()
            return
        fixed = [k for k in ("state_dir", "backend", "http", "journal", "journal_password_file",
                             "journal_lease") if getattr(new, k) != getattr(old, k)]
        if fixed:
            log.warning("reload_needs_restart", settings=fixed, note="kept as they were")
            new = Config(**{**new.__dict__, **{k: getattr(old, k) for k in fixed}})
        loop = asyncio.get_running_loop()
        old_folders = {f.name: f for f in old.folders}
        new_folders = {f.name: f for f in new.folders}
        removed = [n for n in old_folders if n not in new_folders]
        added = [n for n in new_folders if n not in old_folders]
        changed = [n for n in new_folders if n in old_folders and new_folders[n] != old_folders[n]]
        for name in removed + changed:
            self.intake.stop_folder(name)
            self.running.unavailable.discard(name)
        self.config = self.worker.config = new
        self.journal.hooks = new.hooks
        if new.concurrency != old.concurrency:
            loop.create_task(self.backend.slots.resize(new.concurrency))
        self.backend.slots.ahead = new.fal.queue_ahead if self.backend.name == "fal" else 0
        if hasattr(self.backend, "reconfigure"):
            self.backend.reconfigure(new.fal)
        self.intake.set_rules()
        if (new.log.format, new.log.level) != (old.log.format, old.log.level):
            logs.configure(new.log.format, new.log.level)
        for name in added + changed:
            self._start_folder(new_folders[name])
        self.dispatcher.lift_holds()
        self.guard.rejudge()
        log.info("config_reloaded", added=added, removed=removed, changed=changed)
        self.running.wake.set()
        self.status.tell_ready()

    def current_config(self) -> Config:
        """The config in force: what the parts are given, since a reload replaces it."""
        return self.config

    async def _status_text(self) -> str:
        text = status_text(await self.journal.counts(), len(self.running.inflight))
        waiting = waiting_for_fal(self.running.fal_unreachable_since)
        if waiting:
            return f"{waiting}; {text}"
        if self.running.paused(time.time()):
            return f"paused: fal refused the account; {text}"
        return text

    def _fal_reachability(self, outage: Outage, lasted: float | None) -> None:
        """The fal backend's breaker opened (``lasted`` None) or closed: hold or resume
        dispatching, tell the status line, the alerts and ``status``."""
        running = self.running
        running.fal_unreachable_since, running.fal_unreachable_cause = outage.since, outage.cause
        marker = self.config.state_dir / REACHABILITY_FILE
        if outage.since is not None:
            self.alerts.on_fal_unreachable(outage.since, outage.cause or "")
            try:
                tmp = marker.with_suffix(".tmp")
                tmp.write_text(json.dumps({**outage.as_dict(), "pid": os.getpid()}))
                os.replace(tmp, marker)
            except OSError as exc:
                log.warning("fal_unreachable_not_recorded", error=str(exc))
        else:
            self.alerts.on_fal_reachable(lasted or 0.0)
            marker.unlink(missing_ok=True)
            running.wake.set()
        self.status.changed()

    # -- what the web page sees and does ----------------------------------------------------

    def live_state(self) -> web.LiveState:
        running = self.running
        return web.LiveState(
            backend=self.backend.name, in_flight=len(running.inflight),
            paused_until=running.paused_until, pause_reason=running.pause_reason,
            over_budget=self.dispatcher.over_budget_known(time.time()),
            daily_usd=self.config.budget.daily_usd,
            watch_modes=self.intake.watch_modes(),
            fal_unreachable_since=running.fal_unreachable_since,
            fal_unreachable_cause=running.fal_unreachable_cause)

    async def retry_job(self, job_id: int) -> bool:
        """The page's Retry: what ``crystal-watchd retry PATH`` does, for one job."""
        try:
            retried = await retry_jobs(self.config, self.journal, job_ids={job_id})
        except KeyError:
            return False
        self.running.wake.set()
        return bool(retried)

    async def retry_deliveries(self, ids: list[int] | None) -> int:
        """The page's Retry for hook deliveries that gave up: ``crystal-watchd retry-hooks``."""
        count = await self.journal.retry_deliveries(ids)
        self.deliverer.wake()
        return count

    async def approve(self, folders: list[str] | None) -> int:
        """The page's Approve: what ``crystal-watchd approve`` does. Returns pictures released."""
        released = await self.guard.approve(folders, source="web")
        self.running.wake.set()
        self.status.changed()
        return sum(count for count, _ in released.values())

    def resume(self) -> None:
        """The page's Resume: what SIGHUP does (re-read the config, lift any pause)."""
        self.reload()


def run_service(config: Config, *, once: bool = False, progress=None,
                events: Events | None = None, approve: bool = False) -> int:
    """Run the daemon to completion in a fresh event loop; returns the exit code."""
    service = Service(config, once=once, progress=progress, events=events, approve=approve)
    try:
        return asyncio.run(service.run())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
