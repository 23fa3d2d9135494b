"""Upscaling backends: ``local`` (Pillow, offline) and ``fal`` (Crystal Upscaler)."""

from __future__ import annotations

from ..config import Config
from .base import Backend, ResultImage, UpscaleRequest

__all__ = ["Backend", "ResultImage", "UpscaleRequest", "create"]


def create(config: Config) -> Backend:
    """The backend named by ``config.backend``. Raises ConfigError if it cannot start."""
    if config.backend == "local":
        from .local import LocalBackend

        return LocalBackend()
    from .fal import FalBackend

    return FalBackend(config.fal)
