"""Deep-zoom tiles of a job's before and after, cut on demand for the compare view.

Both pictures are described in the output's pixel grid (one Deep Zoom Image pyramid of the
output's size), so the viewer lays them over each other in the same framing; the original
is scaled up only tile by tile, never as a whole.

Memory is what bounds a NAS, so a picture is decoded once per (job, kind, reduction) into a
"base" and every tile of every level is cut from a base: a JPEG decodes at 1/2…1/8 of its
size straight from the file (``draft``), so the first, zoomed-out view of a 96 MP output
needs a 1.5 MP decode; other formats decode once at full size. Bases are held within a byte
budget (the largest single one is held alone), the oldest unused going first, and all of
them are let go after a minute nobody looks. Decoding queues on the daemon's pixel pool
with the workers' own work; cutting a tile is small and runs on two threads of its own.
Encoded tiles are kept in a byte-bounded LRU.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from .. import logs
from ..images.pixels import PixelPool
from ..jobs import Job, JobState
from .tones import to_rgb8

log = logs.get(__name__)
TILE = 254
OVERLAP = 1
QUALITY = 90
#: Reductions a base is decoded at; beyond 1/8 a level is cut from the 1/8 base.
REDUCTIONS = (1, 2, 4, 8)
#: The long side a reduced base keeps at least.
MIN_BASE_SIDE = 2048
#: Bases nobody has used for this long are let go (their memory goes back to the system).
IDLE_SECONDS = 60.0
KINDS = ("before", "after")
_EXIF_ORIENTATION = 0x0112


class TileNotAvailable(Exception):
    """The picture is not there (yet, or any more) or cannot be decoded."""


@dataclass(frozen=True)
class Picture:
    """One side of the compare view: its file and its size once upright."""

    path: Path
    width: int
    height: int
    is_jpeg: bool


@dataclass(frozen=True)
class Pyramid:
    """The Deep Zoom pyramid of the output's grid."""

    width: int
    height: int

    @property
    def max_level(self) -> int:
        return max(0, math.ceil(math.log2(max(self.width, self.height, 1))))

    def factor(self, level: int) -> int:
        """How many output pixels one pixel of ``level`` stands for, a side."""
        return 2 ** (self.max_level - level)

    def level_size(self, level: int) -> tuple[int, int]:
        f = self.factor(level)
        return math.ceil(self.width / f), math.ceil(self.height / f)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int] | None:
        """The tile's box in the level's pixels (with its overlap), or None off the edge."""
        if not 0 <= level <= self.max_level:
            return None
        w, h = self.level_size(level)
        x0, y0 = col * TILE, row * TILE
        if col < 0 or row < 0 or x0 >= w or y0 >= h:
            return None
        return (max(0, x0 - OVERLAP), max(0, y0 - OVERLAP),
                min(w, x0 + TILE + OVERLAP), min(h, y0 + TILE + OVERLAP))

    def descriptor(self) -> str:
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
                f'Format="jpg" Overlap="{OVERLAP}" TileSize="{TILE}">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n')


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The picture's size as shown, its EXIF orientation applied."""
    w, h = image.size
    try:
        turned = image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
    except (OSError, ValueError, SyntaxError):
        turned = False
    return (h, w) if turned else (w, h)


def probe(path: Path) -> Picture:
    """Read a picture's header (no pixels)."""
    try:
        with Image.open(path) as image:
            width, height = upright_size(image)
            return Picture(path, width, height, image.format == "JPEG")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TileNotAvailable(str(exc)) from None


def decode(picture: Picture, reduction: int) -> Image.Image:
    """The picture upright, in 8-bit RGB, at 1/``reduction`` of its size (or larger)."""
    with Image.open(picture.path) as image:
        wanted = max(1, math.ceil(image.size[0] / reduction))  # the base's width, about
        if reduction > 1 and picture.is_jpeg:
            image.draft("RGB", (wanted, math.ceil(image.size[1] / reduction)))
        image.load()
        # What the draft did not reduce (its scales are powers of two; other formats none).
        shrink = image.size[0] // wanted
        base = _keep_exif(image.reduce(shrink), image) if shrink > 1 else image
        ImageOps.exif_transpose(base, in_place=True)  # no copy of a large image
        return to_rgb8(base)


def _keep_exif(reduced: Image.Image, original: Image.Image) -> Image.Image:
    """``reduce`` drops the EXIF orientation that exif_transpose needs: carry it over."""
    orientation = original.getexif().get(_EXIF_ORIENTATION)
    if orientation:
        reduced.getexif()[_EXIF_ORIENTATION] = orientation
    return reduced


def cut(base: Image.Image, box: tuple[float, float, float, float],
        size: tuple[int, int]) -> bytes:
    """One tile: ``box`` of ``base`` (in the base's pixels) at ``size``, as a JPEG."""
    whole = tuple(round(v) for v in box)
    if (whole[2] - whole[0], whole[3] - whole[1]) == size and all(
            abs(a - b) < 1e-6 for a, b in zip(whole, box, strict=True)):
        tile = base.crop(whole)  # 1:1: the file's very pixels
    else:
        tile = base.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)
    out = io.BytesIO()
    tile.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


class TileCache:
    def __init__(self, pixels: PixelPool, memory_bytes: int, tile_cache_bytes: int):
        self.pixels = pixels
        self.memory_bytes = memory_bytes
        self.tile_cache_bytes = tile_cache_bytes
        self._bases: OrderedDict[tuple[int, str, int], tuple[Image.Image, float]] = \
            OrderedDict()
        self._decoding: dict[tuple[int, str, int], asyncio.Task] = {}
        self._tiles: OrderedDict[tuple, bytes] = OrderedDict()
        self._tiles_size = 0
        self._pictures: OrderedDict[tuple[int, str], Picture] = OrderedDict()
        self._cutter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="web-tiles")
        self._warming: set[asyncio.Task] = set()

    def close(self) -> None:
        for task in [*self._decoding.values(), *self._warming]:
            task.cancel()
        self._bases.clear()
        self._tiles.clear()
        self._cutter.shutdown(wait=False, cancel_futures=True)

    @property
    def held_bytes(self) -> int:
        return sum(_bytes_of(image) for image, _ in self._bases.values())

    # -- what the routes call ---------------------------------------------------------------

    async def pictures(self, job: Job) -> tuple[Picture, Picture]:
        """(before, after) of a done job; TileNotAvailable if either is gone."""
        if job.state != JobState.DONE or not job.outputs:
            raise TileNotAvailable("the job has no output")
        found = []
        for kind, path in (("before", job.path), ("after", Path(job.outputs[0]))):
            key = (job.id, kind)
            picture = self._pictures.get(key)
            if picture is None or picture.path != path:
                picture = await asyncio.to_thread(probe, path)
                self._pictures[key] = picture
                while len(self._pictures) > 512:
                    self._pictures.popitem(last=False)
            found.append(picture)
        return found[0], found[1]

    def warm(self, job: Job, before: Picture, after: Picture) -> None:
        """Start decoding what the first, zoomed-out view is cut from while the compare
        page loads: its viewer asks for tiles only once its scripts have run."""
        loop = asyncio.get_running_loop()
        for kind, picture in (("after", after), ("before", before)):
            coarsest = self._reduction(picture, float("inf"))
            task = loop.create_task(self._base(job.id, kind, picture, coarsest))
            self._warming.add(task)
            task.add_done_callback(self._warmed)

    def _warmed(self, task: asyncio.Task) -> None:
        self._warming.discard(task)
        if not task.cancelled():
            task.exception()  # said by the tile route that asks for it (tiles_not_made)

    async def pyramid(self, job: Job) -> Pyramid:
        _, after = await self.pictures(job)
        return Pyramid(after.width, after.height)

    async def tile(self, job: Job, kind: str, level: int, col: int, row: int) -> bytes:
        key = (job.id, kind, level, col, row)
        hit = self._tiles.get(key)
        if hit is not None:
            self._tiles.move_to_end(key)
            return hit
        before, after = await self.pictures(job)
        pyramid = Pyramid(after.width, after.height)
        box = pyramid.tile_box(level, col, row)
        if box is None:
            raise TileNotAvailable("no such tile")
        picture = after if kind == "after" else before
        # One level pixel in the picture's own pixels (the original is smaller).
        per_pixel = pyramid.factor(level) * picture.width / pyramid.width
        reduction = self._reduction(picture, per_pixel)
        base = await self._base(job.id, kind, picture, reduction)
        scale = per_pixel * base.width / picture.width  # level pixels → base pixels
        source_box = (box[0] * scale, box[1] * scale,
                      min(base.width, box[2] * scale), min(base.height, box[3] * scale))
        data = await asyncio.get_running_loop().run_in_executor(
            self._cutter, cut, base, source_box, (box[2] - box[0], box[3] - box[1]))
        self._keep_tile(key, data)
        return data

    # -- bases ------------------------------------------------------------------------------

    @staticmethod
    def _reduction(picture: Picture, per_pixel: float) -> int:
        if not picture.is_jpeg:
            return 1  # decoding at a smaller size is a JPEG's gift only: decode once, whole
        reduction = max(r for r in REDUCTIONS if r <= max(1.0, per_pixel))
        # Not smaller than a screenful: every level from the first view down is then cut
        # from one base, decoded once.
        while reduction > 1 and max(picture.width, picture.height) / reduction < MIN_BASE_SIDE:
            reduction //= 2
        return reduction

    async def _base(self, job_id: int, kind: str, picture: Picture,
                    reduction: int) -> Image.Image:
        self._let_idle_go()
        # A finer base, held or on its way, serves a coarser level as well: one decode, not
        # one per level, while the viewer asks for several levels at once.
        for finer in REDUCTIONS:
            if finer < reduction and (job_id, kind, finer) in self._decoding:
                reduction = finer
                break
            if finer < reduction and (job_id, kind, finer) in self._bases:
                reduction = finer
                break
        key = (job_id, kind, reduction)
        held = self._bases.get(key)
        if held is not None:
            self._bases[key] = (held[0], time.monotonic())
            self._bases.move_to_end(key)
            return held[0]
        task = self._decoding.get(key)
        if task is None:
            megapixels = picture.width * picture.height / 1e6 / reduction ** 2
            task = asyncio.get_running_loop().create_task(
                self.pixels.run(decode, picture, reduction, megapixels=megapixels))
            self._decoding[key] = task
            task.add_done_callback(lambda _t: self._decoding.pop(key, None))
        try:
            image = await asyncio.shield(task)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log.info("tiles_not_made", job_id=job_id, kind=kind, error=str(exc))
            raise TileNotAvailable(str(exc)) from None
        if key not in self._bases:
            self._bases[key] = (image, time.monotonic())
            self._fit_budget(keep=key)
        return image

    def _fit_budget(self, keep: tuple[int, str, int]) -> None:
        """Drop the least recently used bases until the rest fit (``keep`` stays)."""
        total = self.held_bytes
        for key in list(self._bases):
            if total <= self.memory_bytes:
                break
            if key != keep:
                total -= _bytes_of(self._bases.pop(key)[0])

    def _let_idle_go(self) -> None:
        now = time.monotonic()
        for key, (_, used) in list(self._bases.items()):
            if now - used > IDLE_SECONDS:
                del self._bases[key]

    def _keep_tile(self, key: tuple, data: bytes) -> None:
        if key in self._tiles:
            return
        self._tiles[key] = data
        self._tiles_size += len(data)
        while self._tiles_size > self.tile_cache_bytes and self._tiles:
            _, dropped = self._tiles.popitem(last=False)
            self._tiles_size -= len(dropped)


def _bytes_of(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())
