"""Ask before a mass drop spends money (``budget.confirm_above_usd``, $50 by default).

Pointing a folder at an existing archive, or copying a whole shoot into the wrong inbox,
would otherwise be submitted at once. Before the dispatcher takes any picture that no worker
has taken up yet, the guard estimates, per folder, what the pictures waiting to be submitted
would cost together. Above the threshold the folder holds them (``awaiting_approval``) until
someone approves; below it they go at once, so a single picture never waits.

What the threshold is compared against, per folder: the pictures waiting to be submitted,
that is queued jobs no worker has taken up yet and no approval has released (including
those judged earlier under the threshold and still waiting for a worker, so a backlog that
builds up a picture at a time is caught), plus the folder's files still settling or being
hashed (a drop still landing counts whole, not one file at a time). A picture taken up by a
worker, or released by an approval, never counts again, so an approved batch does not make
every later single picture wait; later arrivals are judged afresh. While a folder holds
pictures, new ones join the held set whatever they cost, until the next approval. Pictures
that trickle in no faster than they are processed never build a backlog and are not held:
``budget.daily_usd`` is the cap for that.

Estimates come from each file's header (size and format, no pixel decode) through the same
output plan preflight makes: output megapixels × ``fal.price_per_megapixel``. A file whose
output cannot exist (it will fail before any submission) counts nothing, and so does one
whose header cannot be read yet. The local backend costs nothing and is never held.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from PIL import Image

from .. import logs
from ..config import Config, FalConfig, FolderConfig
from ..errors import PermanentJobError
from ..images import formats, preflight
from ..intake.rules import Rules
from ..jobs import Job
from ..journal import JournalBase

log = logs.get(__name__)
APPROVE_HINT = ("approve with `crystal-watchd approve {folder}`, the web page's Approve button, "
                "or raise budget.confirm_above_usd and reload (SIGHUP)")
#: Header estimates remembered by (path, size, mtime); dropped wholesale beyond this.
CACHE_LIMIT = 100_000


def estimate_file(path: Path, folder: FolderConfig, price_per_megapixel: float) -> float | None:
    """Estimated dollars for upscaling ``path`` with ``folder``'s settings, from its header
    alone. 0 when the output cannot exist (the file fails before anything is submitted);
    None when the header cannot be read (yet)."""
    formats.register_decoders()  # HEIC/HEIF headers
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh, Image.open(fh) as image:
            width, height, fmt = image.width, image.height, image.format or "PNG"
    except Exception:  # noqa: BLE001 - unreadable, not an image, still being written
        return None
    if width < 2 or height < 2 or width * height / 1e6 > folder.max_input_megapixels:
        return 0.0
    try:
        plan = preflight.plan(width, height, folder.scale_factor, folder,
                              preflight.target_format(folder, fmt))
    except PermanentJobError:
        return 0.0
    return plan.paid_megapixels * price_per_megapixel


def estimate_backlog(folder: FolderConfig,
                     price_per_megapixel: float = FalConfig.price_per_megapixel,
                     known: Iterable[tuple[str, int, int]] = (),
                     estimate: Callable[[Path, os.stat_result], float] | None = None
                     ) -> tuple[int, float]:
    """(pictures, estimated dollars) of what sits in ``folder``'s inbox now and would be
    taken, leaving out file versions in ``known`` (journaled already). ``estimate`` prices
    one file (default: from its header, every time)."""
    seen = set(known)
    count, usd = 0, 0.0
    for name, st in Rules(folder).scan_names(folder.inbox):
        if (name, st.st_size, st.st_mtime_ns) in seen:
            continue
        path = Path(name)
        count += 1
        usd += (estimate(path, st) if estimate is not None
                else estimate_file(path, folder, price_per_megapixel) or 0.0)
    return count, usd


def threshold(config: Config) -> float | None:
    """The dollars above which a folder's waiting pictures need approval (None: off)."""
    return None if config.backend == "local" else config.budget.confirm_above_usd


class SpendGuard:
    """Judges the pictures the dispatcher has not taken yet, folder by folder; the service
    calls ``review`` before every claim."""

    def __init__(self, journal: JournalBase, config: Callable[[], Config],
                 incoming: Callable[[str], list[Path]], *, approve_all: bool = False):
        self.journal = journal
        self._config = config
        #: Files of a folder seen but not journaled yet (settling or being hashed).
        self._incoming = incoming
        #: ``once --approve``: everything held or arriving is let go.
        self.approve_all = approve_all
        #: Held sets are judged again against the threshold at start and after a reload.
        self._rejudge = True
        self._cache: dict[tuple[str, int, int], float | None] = {}
        self._estimating = threading.Lock()

    def limit(self) -> float | None:
        return None if self.approve_all else threshold(self._config())

    def rejudge(self) -> None:
        """The configuration was reloaded: settings and the threshold may have changed."""
        self._rejudge = True
        self._cache.clear()

    async def start(self) -> None:
        """Before the first dispatch: held sets now within the threshold (or everything,
        ``once --approve``) are released, so ``once`` sees them queued from its first look."""
        limit = self.limit()
        self.journal.spend_guard = limit is not None
        self._rejudge = False
        await self._release_within(limit)

    async def review(self, exclude_folders: Iterable[str] = ()) -> bool:
        """Clear or hold every picture the guard has not judged yet; True if any was held."""
        limit = self.limit()
        self.journal.spend_guard = limit is not None
        if self._rejudge:
            self._rejudge = False
            await self._release_within(limit)
        if limit is None:
            return False
        config = self._config()
        fresh: dict[str, list[Job]] = {}
        for job in await self.journal.unjudged(exclude_folders):
            if config.folder(job.folder) is not None:
                fresh.setdefault(job.folder, []).append(job)
        if not fresh:
            return False
        incoming: dict[str, list[Path]] = {}
        for name, jobs in fresh.items():
            journaled = {job.path for job in jobs}
            incoming[name] = [p for p in self._incoming(name) if p not in journaled]
        priced, landing = await asyncio.to_thread(self._estimate_all, config, fresh, incoming)
        # Read after the estimates, with no wait before the holds: an approval made while
        # they were estimated is seen, and its released pictures are not held again.
        held_any = False
        holding = await self.journal.held(fresh)
        # Pictures of each folder waiting to be submitted and not approved: the unjudged
        # and those cleared earlier that no worker has taken up yet (so a backlog builds up
        # even when it arrives a picture at a time).
        pending = await self.journal.pending([name for name in fresh if name not in holding])
        for name, jobs in fresh.items():
            estimates = {job.id: priced[job.id] for job in jobs}
            if name in holding:  # a held folder holds its arrivals whatever they cost
                joined = await self.journal.hold(estimates)
                if joined:
                    held_any = True
                    log.debug("spend_hold_joined", folder=name, count=len(joined))
                continue
            # (one journaled while the estimates were made has none yet: judged next round)
            waiting = {**{i: usd for i, usd in pending.get(name, {}).items() if usd is not None},
                       **estimates}
            total = sum(waiting.values()) + sum(landing.get(name, ()))
            if total <= limit:
                await self.journal.clear_spend(estimates)
                continue
            held_any = True
            await self.journal.hold(waiting)
            log.warning("spend_approval_needed", folder=name,
                        count=len(waiting) + len(landing.get(name, ())),
                        estimated_usd=round(total, 2), confirm_above_usd=limit,
                        note="nothing of this folder is submitted until approved; pictures "
                             "arriving meanwhile join the held set; "
                             + APPROVE_HINT.format(folder=name))
        return held_any

    async def approve(self, folders: Iterable[str] | None,
                      source: str) -> dict[str, tuple[int, float]]:
        """Release what is held now (of ``folders``, or every configured one)."""
        names = list(folders) if folders is not None else [f.name for f in self._config().folders]
        released = await self.journal.approve(names)
        for name, (count, usd) in released.items():
            log.info("spend_approved", folder=name, count=count, estimated_usd=round(usd, 2),
                     source=source)
        return released

    async def _release_within(self, limit: float | None) -> None:
        """At start and after a reload: a held set now within the threshold (or with the
        guard off) is released."""
        names = [f.name for f in self._config().folders]
        within = [name for name, (_, usd) in (await self.journal.held(names)).items()
                  if limit is None or usd <= limit]
        if within:
            await self.approve(within, source="configuration")

    async def log_backlog(self, after: Callable[[], Awaitable[None]] | None = None) -> None:
        """At start, once ``after`` returns (the first scans are done: two listings of a big
        inbox at once only slow each other): say how many pictures each inbox holds that
        were never taken, and what they would cost (a first start over an existing archive).
        The estimates are remembered for the guard's own judgement of the same files."""
        config = self._config()
        if config.backend == "local":
            return
        if after is not None:
            await after()
        price = config.fal.price_per_megapixel
        for folder in config.folders:
            known = await self.journal.known_versions(folder.name)

            def estimate(path: Path, st: os.stat_result, folder: FolderConfig = folder) -> float:
                return self._estimate(path, st.st_size, st.st_mtime_ns, folder, price)

            count, usd = await asyncio.to_thread(estimate_backlog, folder, price, known,
                                                 estimate)
            if count:
                limit = self.limit()
                log.info("inbox_backlog", folder=folder.name, count=count,
                         estimated_usd=round(usd, 2), confirm_above_usd=limit,
                         note="over the threshold: they wait for approval" if limit is not None
                         and usd > limit else "they are taken now")

    # -- estimates (run in a thread) ---------------------------------------------------------

    def _estimate(self, path: Path, size: int, mtime_ns: int, folder: FolderConfig,
                  price: float) -> float:
        key = (str(path), size, mtime_ns)
        # One at a time: the start's backlog count and the guard's review run on two threads
        # over the same new files; without the lock both would read every header.
        with self._estimating:
            if key not in self._cache:
                self._cache[key] = estimate_file(path, folder, price)
            return self._cache[key] or 0.0

    def _estimate_all(self, config: Config, fresh: Mapping[str, list[Job]],
                      incoming: Mapping[str, list[Path]]
                      ) -> tuple[dict[int, float], dict[str, list[float]]]:
        """Dollars per unjudged job id, and per folder those of its files still landing."""
        if len(self._cache) > CACHE_LIMIT:
            self._cache.clear()
        price = config.fal.price_per_megapixel
        jobs: dict[int, float] = {}
        landing: dict[str, list[float]] = {}
        for name, group in fresh.items():
            folder = config.folder(name)
            for job in group:
                jobs[job.id] = self._estimate(job.path, job.size, job.mtime_ns, folder, price)
            for path in incoming.get(name, ()):
                try:
                    st = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue  # gone before it was taken
                landing.setdefault(name, []).append(
                    self._estimate(path, st.st_size, st.st_mtime_ns, folder, price))
        return jobs, landing


def held_lines(journal: JournalBase, folders: Iterable[str]) -> list[str]:
    """Every picture awaiting approval with its estimate, and each folder's total."""
    names = list(folders)
    lines = []
    for name, (count, usd) in journal.held(names).items():
        lines.append(f"{name}: {count} picture(s) awaiting approval, estimated ${usd:.2f}")
        lines += [f"  {rel}  ${each:.4f}" for folder, rel, each in journal.held_pictures([name])]
    return lines


def _known_versions(config: Config) -> dict[str, set[tuple[str, int, int]]]:
    """Per folder, the file versions the journal holds already (none if there is none)."""
    from ..journal import JournalUnavailable, journal_file, open_journal

    if not config.journal and not journal_file(config).exists():
        return {}
    try:
        journal = open_journal(config, readonly=not config.journal)
    except JournalUnavailable:
        return {}  # ``check`` reports it next; the backlog then counts every file
    try:
        return {f.name: journal.known_versions(f.name) for f in config.folders}
    finally:
        journal.close()


def backlog_lines(config: Config, described: dict) -> list[str]:
    """``check``: estimate each inbox's backlog (files never taken) from their headers, add
    it to ``described`` (the JSON ``check`` prints) per folder, and return one line each."""
    known = _known_versions(config)
    price, limit = config.fal.price_per_megapixel, threshold(config)
    lines = []
    for folder, entry in zip(config.folders, described["folders"], strict=True):
        count, usd = estimate_backlog(folder, price, known.get(folder.name, ()))
        entry["backlog"] = {"pictures": count, "estimated_usd": round(usd, 4)}
        what = (f"folder '{folder.name}': {count} picture(s) in the inbox not processed yet, "
                f"estimated ${usd:.2f} at ${price:g} per output megapixel")
        if config.backend == "local":
            what += " (the local backend costs nothing)"
        elif limit is not None and usd > limit:
            what += (f"; over budget.confirm_above_usd (${limit:g}): they wait for approval "
                     "(crystal-watchd approve)")
        lines.append(what)
    return lines


def approve_command(config: Config, folders: list[str]) -> tuple[list[str], bool]:
    """``crystal-watchd approve [FOLDER…]``: release what is held now, in the journal every
    daemon on it reads (they take the pictures on their next look at the queue)."""
    from ..journal import journal_file, open_journal

    configured = [f.name for f in config.folders]
    unknown = [name for name in folders if name not in configured]
    if unknown:
        return [f"crystal-watchd: no folder named {', '.join(map(repr, unknown))} in "
                f"{config.path} (folders: {', '.join(configured)})"], False
    if not config.journal and not journal_file(config).exists():
        return ["nothing awaits approval (no journal yet)"], True
    journal = open_journal(config)
    try:
        released = journal.approve(folders or configured)
    finally:
        journal.close()
    if not released:
        return ["nothing awaits approval"], True
    return [f"approved {count} picture(s) in '{name}', estimated ${usd:.2f}"
            for name, (count, usd) in released.items()], True
