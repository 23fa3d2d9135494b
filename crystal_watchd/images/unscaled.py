"""The output of a picture that already meets its folder's ``fit`` target: the picture
itself, with no upscale and nothing paid.

It goes through the same writing as an upscaler's result (render.py), so it gets the
output's format, the source's metadata and the print resolution set for the target.
"""

from __future__ import annotations

from pathlib import Path

from ..config import FolderConfig
from . import preflight
from .result import ResultImage

#: Formats whose own bytes can be the output with only their metadata rewritten.
_SPLICED = ("JPEG", "PNG")


def as_it_is(data: bytes, source: preflight.SourceImage, folder: FolderConfig,
             work_file: Path) -> ResultImage:
    """The picture as a result: its own bytes (saved to ``work_file``) when they can be the
    output as they are (already in the output's format, upright, nothing to flatten), so no
    pixel is re-encoded; else its upright pixels, encoded into the output's format."""
    if source.as_is and source.format == source.target and source.format in _SPLICED:
        work_file.parent.mkdir(parents=True, exist_ok=True)
        work_file.write_bytes(data)
        return ResultImage(path=work_file)
    image = source.image
    if image is None:  # inspected for sending its bytes as they are: decode them now
        image = preflight.inspect(data, folder).image
    return ResultImage(image=image)
