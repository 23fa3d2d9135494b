"""The seam every backend plugs into: one job's upright image in, result images out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from ..preflight import Plan, SourceImage


@dataclass(frozen=True)
class UpscaleRequest:
    job_id: int
    source: SourceImage
    #: The original file's bytes, for backends that can send them as they are.
    data: bytes
    source_name: str
    plan: Plan
    creativity: float
    #: A request the backend accepted earlier (journaled): resume it, never resubmit.
    request_id: str | None
    #: Called with the backend's request id as soon as it has one, before any waiting;
    #: the worker journals it so a crash resumes rather than pays again.
    on_submitted: Callable[[str], Awaitable[None]]
    #: Called when a journaled request is gone for good, before submitting anew.
    on_forgotten: Callable[[], Awaitable[None]]
    work_dir: Path = field(default=Path("."))


@dataclass
class ResultImage:
    """One upscaled image: decoded in memory, or a verified file downloaded to work_dir."""

    image: Image.Image | None = None
    path: Path | None = None

    def open(self) -> Image.Image:
        if self.image is not None:
            return self.image
        assert self.path is not None
        with Image.open(self.path) as im:
            im.load()
            return im.copy() if im.mode in ("RGB", "RGBA", "L", "LA") else im.convert("RGBA")

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Backend(Protocol):
    name: str

    async def upscale(self, request: UpscaleRequest) -> list[ResultImage]:
        """Upscale one image. Raise errors from crystal_watchd.errors; never retry on your own
        beyond what keeps a single request alive (the worker owns backoff)."""
        ...

    async def aclose(self) -> None: ...
