"""Judging a result: the compare view, its deep-zoom tiles, the job's file facts and the
downloads of the original and the output exactly as on disk.

Every route here takes a job id and serves only the files the journal names for that job;
the page's guard (Host check, token or session) stands in front of all of them.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web
from PIL import Image

from ..jobs import Job, JobState
from .tiles import KINDS, TileCache, TileNotAvailable, upright_size
from .view import job_spend

if TYPE_CHECKING:
    from .app import WebServer

#: Done jobs the compare view steps through with j/k (the most recent ones).
NEIGHBOURS = 200
#: Decoded pictures the compare view holds at most, beside the tiles' own cache.
TILE_CACHE_BYTES = 48 * 1024 * 1024
#: Bytes read at a time for a download.
CHUNK = 256 * 1024


@dataclass(frozen=True)
class FileFacts:
    """What the job page says about one file."""

    path: str
    exists: bool
    size: int | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def megapixels(self) -> float | None:
        return self.width * self.height / 1e6 if self.width and self.height else None


def file_facts(path: Path) -> FileFacts:
    try:
        size = path.stat().st_size
    except OSError:
        return FileFacts(str(path), False)
    try:
        with Image.open(path) as image:
            width, height = upright_size(image)
            return FileFacts(str(path), True, size, image.format, image.mode, width, height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return FileFacts(str(path), True, size)


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name in UTF-8 (RFC 6266 and
    RFC 5987): quotes, backslashes, control and non-ASCII characters never reach the
    quoted form."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class Review:
    def __init__(self, server: WebServer):
        self.server = server
        config = server.daemon.config
        memory = int(config.pixels.memory_mb * 1024 * 1024)
        self.tiles = TileCache(server.daemon.pixels, memory, TILE_CACHE_BYTES)

    def register(self, app: web.Application) -> None:
        add = app.router.add_get
        add(r"/jobs/{job_id:\d+}/compare", self.compare)
        add(r"/jobs/{job_id:\d+}/tiles/{kind:before|after}.dzi", self.descriptor)
        add(r"/jobs/{job_id:\d+}/tiles/{kind:before|after}_files/{level:\d+}/"
            r"{col:\d+}_{row:\d+}.jpg", self.tile)
        add(r"/jobs/{job_id:\d+}/original", self.original)
        add(r"/jobs/{job_id:\d+}/outputs/{index:\d+}", self.output)

    def close(self) -> None:
        self.tiles.close()

    async def _job(self, request: web.Request) -> Job:
        view = self.server.view
        job = await view.call(view.job, int(request.match_info["job_id"]))
        if job is None:
            raise web.HTTPNotFound(text="no such job\n")
        return job

    # -- the job page's facts -------------------------------------------------------------

    async def facts(self, job: Job) -> dict[str, Any]:
        view = self.server.view
        spend = await view.call(job_spend, view, job.id)
        original, *outputs = await asyncio.to_thread(
            lambda: [file_facts(job.path), *(file_facts(Path(p)) for p in job.outputs)])
        copied = None
        if job.waits_for is not None:
            copied = await view.call(view.job, job.waits_for)
        return {"original": original, "outputs": outputs, "spend": spend, "copied": copied}

    # -- compare view ---------------------------------------------------------------------

    async def compare(self, request: web.Request) -> web.Response:
        job = await self._job(request)
        if job.state != JobState.DONE or not job.outputs:
            raise web.HTTPNotFound(text="this job has no output to compare\n")
        view = self.server.view
        done = await view.call(view.recent, NEIGHBOURS, None)
        ids = [j.id for j in done]
        newer = older = None
        if job.id in ids:
            at = ids.index(job.id)
            newer = ids[at - 1] if at > 0 else None
            older = ids[at + 1] if at + 1 < len(ids) else None
        try:
            before, after = await self.tiles.pictures(job)
        except TileNotAvailable as exc:
            raise web.HTTPNotFound(text=f"the pictures cannot be read: {exc}\n") from None
        self.tiles.warm(job, before, after)
        return self.server._page(request, "compare.html", page="compare", job=job,
                                 before=before, after=after, newer=newer, older=older)

    async def descriptor(self, request: web.Request) -> web.Response:
        job = await self._job(request)
        try:
            pyramid = await self.tiles.pyramid(job)
        except TileNotAvailable:
            raise web.HTTPNotFound() from None
        return web.Response(text=pyramid.descriptor(), content_type="application/xml",
                            headers={"Cache-Control": "private, no-cache"})

    async def tile(self, request: web.Request) -> web.Response:
        job = await self._job(request)
        kind, info = request.match_info["kind"], request.match_info
        if kind not in KINDS:
            raise web.HTTPNotFound()
        try:
            data = await self.tiles.tile(job, kind, int(info["level"]), int(info["col"]),
                                         int(info["row"]))
        except TileNotAvailable:
            raise web.HTTPNotFound() from None
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=300"})

    # -- downloads ------------------------------------------------------------------------

    async def original(self, request: web.Request) -> web.StreamResponse:
        return await self._send(request, (await self._job(request)).path)

    async def output(self, request: web.Request) -> web.StreamResponse:
        job = await self._job(request)
        index = int(request.match_info["index"])
        if index >= len(job.outputs):
            raise web.HTTPNotFound(text="no such output\n")
        return await self._send(request, Path(job.outputs[index]))

    async def _send(self, request: web.Request, path: Path) -> web.StreamResponse:
        """The file's bytes as they are (never a compressed sibling, as FileResponse would
        pick for a browser that accepts gzip)."""
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except OSError:
            raise web.HTTPNotFound(text="the file is not there any more\n") from None
        try:
            size = await asyncio.to_thread(lambda: os.fstat(handle.fileno()).st_size)
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            response = web.StreamResponse(headers={
                "Content-Type": kind, "Content-Disposition": content_disposition(path.name),
                "Content-Length": str(size), "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox"})
            await response.prepare(request)
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            handle.close()
