"""Offline backend: Pillow's Lanczos resize. For trying the daemon without a key, and tests."""

from __future__ import annotations

import asyncio

from PIL import Image

from .. import logs
from .base import ResultImage, Slots, UpscaleRequest

log = logs.get(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, slots: Slots | None = None) -> None:
        self.slots = slots or Slots(1)
        self._told_creativity = False

    async def upscale(self, request: UpscaleRequest) -> list[ResultImage]:
        if request.creativity and not self._told_creativity:
            self._told_creativity = True
            log.info("local_backend_ignores_creativity", creativity=request.creativity)
        size = (request.plan.width, request.plan.height)
        assert request.source.image is not None
        async with self.slots:
            image = await asyncio.to_thread(request.source.image.resize, size,
                                            Image.Resampling.LANCZOS)
        return [ResultImage(image=image)]

    async def aclose(self) -> None:
        return None
