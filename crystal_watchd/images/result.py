"""What an upscaler hands back: one image, decoded in memory or a verified file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass
class ResultImage:
    """One upscaled image: decoded in memory, or a verified file downloaded to work_dir."""

    image: Image.Image | None = None
    path: Path | None = None
    #: What the backend said it billed for the request (fal's ``x-fal-billable-units``),
    #: on the first image of a result; None where it said nothing.
    billed_units: float | None = None

    def open(self) -> Image.Image:
        if self.image is not None:
            return self.image
        assert self.path is not None
        im = Image.open(self.path)
        im.load()  # reads all pixels and closes the file; no second copy in memory
        return im if im.mode in ("RGB", "RGBA", "L", "LA") else im.convert("RGBA")

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
