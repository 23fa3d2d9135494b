"""Before/after thumbnails: 320 px JPEGs made at most once per finished job into
state_dir/thumbs.

A thumbnail is made the first time the page asks for it, so a job nobody looks at costs the
daemon nothing beyond what the job itself needs; only the "before" picture of an original
that ``originals: delete`` removes is made as the job finishes. The cache is capped in
bytes: the oldest files go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from .. import logs
from ..events import JobChanged
from ..images.pixels import PixelPool
from ..images.source import open_source
from ..jobs import Job, JobState
from .tones import to_rgb8

log = logs.get(__name__)
THUMB_SIDE = 320
KINDS = ("before", "after")
#: Originals held open between "output written" and "done", so a thumbnail can still be
#: made of an original that ``originals: delete`` removes; beyond this many, none are held.
MAX_HELD_SOURCES = 32

#: The most a thumbnail decode of a JPEG can take: draft() decodes at 1/2…1/8 scale, keeping
#: at least twice the thumbnail's side.
JPEG_DRAFT_MEGAPIXELS = 2.0


def estimated_megapixels(job: Job, kind: str, source: Path | BinaryIO) -> float:
    """What the pixel pool should reserve for one thumbnail of ``job``."""
    megapixels = job.output_megapixels or 0.0
    if kind == "before" and job.settings:
        megapixels /= max(float(job.settings.get("scale_factor") or 1.0), 1.0) ** 2
    name = source.name if isinstance(source, Path) else str(getattr(source, "name", ""))
    if name.lower().endswith((".jpg", ".jpeg")):
        megapixels = min(megapixels, JPEG_DRAFT_MEGAPIXELS)
    return megapixels


def render(source: Path | BinaryIO, dest: Path) -> int:
    """Write a JPEG of ``source`` no larger than THUMB_SIDE a side; returns its size.

    ``draft`` lets the JPEG decoder scale by 1/2…1/8 while decoding, so a large JPEG is never
    decoded at full size (``thumbnail`` with a reducing_gap would ask for it too; saying it
    keeps it so); ``thumbnail`` then reduces in steps."""
    with Image.open(source) as image:
        image.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), reducing_gap=2.0)
        # 16-bit and float pictures are tone-mapped to 8 bits, not clipped to white.
        small = to_rgb8(ImageOps.exif_transpose(image))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        small.save(tmp, "JPEG", quality=82, optimize=True)
    os.replace(tmp, dest)
    return dest.stat().st_size


class ThumbCache:
    def __init__(self, directory: Path, cap_bytes: int, pixels: PixelPool):
        self.directory = directory
        #: The daemon's one bounded pixel pool: thumbnails queue with the workers' own work.
        self.pixels = pixels
        self.cap_bytes = cap_bytes
        self._making: dict[tuple[int, str], asyncio.Task] = {}
        self._held: dict[int, BinaryIO] = {}
        #: (job id, kind) that could not be made (source gone, not decodable): not retried
        self._unmakeable: set[tuple[int, str]] = set()
        self._size: int | None = None

    def path(self, job_id: int, kind: str) -> Path:
        return self.directory / f"{int(job_id)}-{kind}.jpg"

    # -- fed by the journal's events -----------------------------------------------------

    def on_change(self, event: JobChanged) -> None:
        job = event.job
        if "outputs" in event.changed and job.outputs and job.id not in self._held \
                and len(self._held) < MAX_HELD_SOURCES:
            with contextlib.suppress(OSError):
                self._held[job.id] = open_source(job.path)
        if event.finished:
            held = self._held.pop(job.id, None)
            if held is not None and job.state == JobState.DONE and not job.path.exists():
                # The original is gone (``originals: delete``): now or never for "before".
                self._start(job, "before", held)
            elif held is not None:
                held.close()
            # Everything else is made when the page first asks for it: a job nobody looks
            # at costs no decode (a PNG output cannot be decoded at reduced size).

    def close(self) -> None:
        for held in self._held.values():
            held.close()
        self._held.clear()
        for task in self._making.values():
            task.cancel()

    # -- making ---------------------------------------------------------------------------

    def _start(self, job: Job, kind: str, held: BinaryIO | None = None) -> asyncio.Task | None:
        key = (job.id, kind)
        if key in self._making:
            if held is not None:
                held.close()
            return self._making[key]
        source: Path | BinaryIO | None = held
        if source is None:
            source = Path(job.outputs[0]) if kind == "after" and job.outputs else job.path
        task = asyncio.get_running_loop().create_task(
            self._make(job.id, kind, source, estimated_megapixels(job, kind, source)))
        self._making[key] = task
        task.add_done_callback(lambda _t: self._making.pop(key, None))
        return task

    async def _make(self, job_id: int, kind: str, source: Path | BinaryIO,
                    megapixels: float) -> bool:
        try:
            size = await self.pixels.run(render, source, self.path(job_id, kind),
                                         megapixels=megapixels)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log.info("thumbnail_not_made", job_id=job_id, kind=kind, error=str(exc))
            if len(self._unmakeable) < 100_000:
                self._unmakeable.add((job_id, kind))
            return False
        finally:
            if not isinstance(source, Path):
                source.close()
        await self._account(size)
        return True

    async def get(self, job: Job, kind: str) -> Path | None:
        """The thumbnail of a finished job, made now if it is missing and can still be made."""
        path = self.path(job.id, kind)
        task = self._making.get((job.id, kind))
        if task is None:
            if path.exists():
                return path
            if job.state != JobState.DONE or (job.id, kind) in self._unmakeable:
                return None
            task = self._start(job, kind)
        if task is not None and await asyncio.shield(task):
            return path
        return path if path.exists() else None

    async def _account(self, added: int) -> None:
        if self._size is None:
            self._size = await asyncio.to_thread(self._measure)
        else:
            self._size += added
        if self._size > self.cap_bytes:
            self._size = await asyncio.to_thread(self._evict)

    def _measure(self) -> int:
        try:
            return sum(e.stat().st_size for e in os.scandir(self.directory) if e.is_file())
        except OSError:
            return 0

    def _evict(self) -> int:
        """Drop the oldest thumbnails until the cache is at 90 % of its cap."""
        entries = sorted((e.stat().st_mtime_ns, e.stat().st_size, e.path)
                         for e in os.scandir(self.directory) if e.is_file())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.cap_bytes * 0.9:
                break
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass
        log.info("thumbnails_evicted", kept_bytes=total, cap_bytes=self.cap_bytes)
        return total
