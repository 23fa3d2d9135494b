"""A job's completion: its results written beside their final names, placed (every changed
name choice journaled first), the original kept, moved or deleted, the job marked done.

    Worker.process ─► Completer.complete ─► write (temps) ─► Journal (pending names)
                                             └─► place ─► Journal (outputs) ─► original
                                                          handled ─► Journal (done)
    a crash between writing and done ─► Completer.resume (at the next start)

The worker holds a ``Completer`` and runs it shielded from cancellation, so a shutdown never
loses finished work.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from .. import __version__
from ..config import Config, FolderConfig
from ..errors import RetryableError
from ..images import metadata, output, preflight, provenance, render
from ..images.pixels import PixelPool
from ..images.result import ResultImage
from ..jobs import Job, JobState, Settings
from ..journal import JournalBase


def _copy_ext(folder: FolderConfig, source: Path, copied: Path) -> str:
    """``{ext}`` of a dedupe copy: the copied output's, except that ``output_format: same``
    keeps this input's own spelling of that format (``photo.JPEG`` next to ``photo.jpg``)."""
    ext = copied.suffix.lstrip(".")
    known = Image.registered_extensions()
    own = known.get(source.suffix.lower())
    if folder.output_format == "same" and own and own == known.get(copied.suffix.lower()):
        return source.suffix.lstrip(".")
    return ext


def unchanged(job: Job) -> bool:
    """Whether the job's source is still the version it was queued as (size and mtime)."""
    try:
        st = os.stat(job.path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (job.size, job.mtime_ns)


class Completer:
    """Writing, placing and finishing a job's outputs, and handling its original.

    Given the config (a function: a reload replaces it; the price per megapixel is read when
    a job completes), the journal, the pixel pool the heavy writes run in, and ``charges``
    (whether the backend bills: the local one costs nothing). Holds no state of its own.
    """

    def __init__(self, config: Callable[[], Config], journal: JournalBase, pixels: PixelPool,
                 *, charges: bool):
        self._config = config
        self.journal = journal
        self.pixels = pixels
        self._charges = charges

    async def _write_results(self, job: Job, folder: FolderConfig,
                             source: preflight.SourceImage | None, plan: preflight.Plan | None,
                             results: list[ResultImage], copy: bool, alpha: Path | None,
                             bound) -> tuple[list[list[str]], float]:
        """Write every result to a temp file beside its final name: [[temp, chosen, wanted]],
        and the output megapixels (what fal bills)."""
        scale = plan.scale if plan else folder.scale_factor
        pending, megapixels = [], 0.0
        for i, result in enumerate(results):
            tag = f"{job.id}-{i}"
            if copy:
                assert result.path is not None
                ext = _copy_ext(folder, job.path, result.path)
                wanted = output.render_name(folder, job.rel, scale=scale, ext=ext, index=i)
                tmp = await asyncio.to_thread(output.copy_temp, wanted, result.path, tag)
            else:
                assert source is not None and plan is not None
                ext = output.output_ext(folder, job.path, source.format)
                wanted = output.render_name(folder, job.rel, scale=scale, ext=ext, index=i)
                target = render.Target(fmt=source.target, meta=source.meta, grey=source.grey,
                                       alpha=alpha, jpeg_quality=folder.jpeg_quality,
                                       webp_quality=folder.webp_quality,
                                       dpi=metadata.output_dpi(source.meta.dpi, folder.dpi,
                                                               scale),
                                       made=self._provenance(job, folder, plan))
                if render.passes_through(result, target):
                    written = await asyncio.to_thread(render.write, result, target, wanted, tag)
                else:
                    written = await self.pixels.run(
                        render.write, result, target, wanted, tag, megapixels=plan.megapixels,
                        bytes_per_pixel=render.bytes_per_pixel(target.fmt))
                megapixels += written.megapixels
                tmp = written.tmp
                if written.fallback:
                    bound.warning("output_format_fallback", reason=written.fallback)
                    ext = output.output_ext(folder, job.path, source.format, written.fmt)
                    wanted = output.render_name(folder, job.rel, scale=scale, ext=ext, index=i)
                result.discard()
            chosen = output.choose_name(wanted, folder.overwrite)
            pending.append([str(tmp), str(chosen), str(wanted)])
        if alpha is not None:
            alpha.unlink(missing_ok=True)
        return pending, megapixels

    def _provenance(self, job: Job, folder: FolderConfig,
                    plan: preflight.Plan) -> provenance.Provenance:
        """What the output says of where it came from (images/provenance.py)."""
        settings = Settings(**job.settings) if job.settings else None
        backend = settings.backend if settings else "local"
        price = self._config().fal.price_per_megapixel
        return provenance.Provenance(
            SourceSha256=job.sha256, SettingsKey=settings.key() if settings else "",
            Backend=backend,
            Model=self._config().fal.endpoint if backend == "fal" else "pillow-lanczos",
            Scale=output.format_number(plan.scale),
            Creativity=output.format_number(folder.creativity),
            Source=provenance.source_text(job.rel), RequestId=job.request_id or "",
            EstimatedCostUsd=f"{plan.megapixels * price if self._charges else 0.0:.6f}",
            Software=f"crystal-watchd {__version__}")

    async def _place(self, job: Job, folder: FolderConfig,
                     pending: list[list[str]]) -> tuple[Job, list[str] | None]:
        """Rename temps into place; journal every changed name choice before using it."""
        finals = []
        for i, (tmp, chosen, wanted) in enumerate(pending):
            while True:
                placed = output.place(Path(tmp), Path(chosen), folder.overwrite)
                if placed is not None:
                    finals.append(str(placed))
                    break
                if not Path(tmp).exists():
                    return job, None  # temp and target both gone: the output must be redone
                chosen = str(output.choose_name(Path(wanted), folder.overwrite))
                pending[i] = [tmp, chosen, wanted]
                job = await self.journal.output_pending(job, pending)
        return job, finals

    async def complete(self, job: Job, folder: FolderConfig,
                        source: preflight.SourceImage | None, plan: preflight.Plan | None,
                        results: list[ResultImage], bound, started: float,
                        copy: bool = False, alpha: Path | None = None) -> JobState:
        pending, megapixels = await self._write_results(job, folder, source, plan, results,
                                                        copy, alpha, bound)
        job = await self.journal.output_pending(job, pending)
        job, finals = await self._place(job, folder, pending)
        if finals is None:
            raise RetryableError("the output vanished while it was being placed", kind="internal")
        # A picture kept as it is (it met the folder's fit target) never reached the upscaler.
        unpaid = copy or (plan is not None and plan.as_is)
        billed = megapixels if self._charges and not unpaid else 0.0
        price = self._config().fal.price_per_megapixel
        # What fal said it billed, beside the estimate: for this app a unit is an output
        # megapixel, priced like the estimate.
        said = [r.billed_units for r in results if r.billed_units is not None]
        units = round(sum(said), 6) if said and not unpaid else None
        # This run's cost: runs fal may have billed without a result (see Job.paid_twice)
        # have their own rows in the spend ledger already.
        job = await self.journal.output_written(
            job, finals, megapixels=None if unpaid else round(megapixels, 6),
            cost_usd=round(billed * price, 6), billed_units=units,
            billed_usd=None if units is None else round(units * price, 6))
        return await self._finish(job, folder, bound, started)

    async def found_in_outbox(self, job: Job, folder: FolderConfig, outputs: list[Path],
                              bound, started: float) -> JobState:
        """The outbox already holds this work (its outputs name the same source and
        settings) though the journal did not know it: recorded as done, nothing paid, no
        copy written."""
        finals = [str(p) for p in outputs]
        job = await self.journal.output_written(job, finals, megapixels=None, cost_usd=0.0)
        bound.info("job_found_in_outbox", outputs=finals,
                   note="an output in the outbox already names this file and settings; "
                        "recorded as done without upscaling again")
        return await self._finish(job, folder, bound, started)

    async def resume(self, job: Job, folder: FolderConfig, bound) -> JobState:
        """A crash hit between writing the output and marking the job done: finish that."""
        if not job.outputs:
            job, finals = await self._place(job, folder, list(job.pending))
            if finals is None:
                await self.journal.output_pending(job, [])
                raise RetryableError("an interrupted output was lost; processing again",
                                     kind="internal")
            job = await self.journal.output_written(job, finals,
                                                    megapixels=job.output_megapixels,
                                                    cost_usd=job.cost_usd)
        bound.info("job_resumed_after_output", outputs=job.outputs)
        return await self._finish(job, folder, bound, time.monotonic())

    async def _finish(self, job: Job, folder: FolderConfig, bound, started: float) -> JobState:
        await self._handle_original(job, folder, bound)
        job = await self.journal.done(job)
        bound.info("job_done", outputs=job.outputs, seconds=round(time.monotonic() - started, 3),
                   output_megapixels=job.output_megapixels, cost_usd=job.cost_usd)
        return job.state

    async def _handle_original(self, job: Job, folder: FolderConfig, bound) -> None:
        if folder.originals == "keep" or not unchanged(job):
            return  # a changed file is a new version: leave it for its own job
        try:
            if folder.originals == "move":
                moved = output.move_file(job.path, folder.done_dir / job.rel)
                await self.journal.moved_source(job, moved)
                bound.info("original_moved", to=str(moved))
            else:
                job.path.unlink()
                bound.info("original_deleted")
        except OSError as exc:
            bound.warning("original_not_handled", originals=folder.originals, error=str(exc))
