"""Upscaling backends: ``local`` (Pillow, offline) and ``fal`` (Crystal Upscaler)."""

from __future__ import annotations

from ..config import Config
from .base import Backend, ResultImage, Slots, UpscaleRequest

__all__ = ["Backend", "ResultImage", "Slots", "UpscaleRequest", "create"]


def create(config: Config) -> Backend:
    """The backend named by ``config.backend``. Raises ConfigError if it cannot start."""
    if config.backend == "local":
        from .local import LocalBackend

        return LocalBackend(Slots(config.concurrency))
    from .fal import FalBackend

    return FalBackend(config.fal, Slots(config.concurrency, ahead=config.fal.queue_ahead))
