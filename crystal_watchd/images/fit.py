"""A folder's ``fit:`` target → the factor each picture needs to reach it.

The factor comes from the upright picture (EXIF orientation applied first, as preflight
reports it), though for every target here only the long edge or the pixel count matters,
and neither changes with a turn: a print follows the picture's orientation (a 40×60 cm print
of a landscape picture is 60 cm wide), so the picture's long edge goes to the print's long
edge and its short edge keeps the picture's aspect (nothing is cropped).

Pure arithmetic; preflight.plan clamps the factor to the upscaler's range and the output
limits.
"""

from __future__ import annotations

import math

from ..config.fit import FitTarget

#: The upscaler's range of factors.
MIN_SCALE, MAX_SCALE = 1.0, 200.0
#: The aspect assumed where a target has none of its own (a long edge, for estimates): the
#: 3:2 of most cameras and of the common print sizes.
TYPICAL_ASPECT = 2 / 3


def wanted_scale(width: int, height: int, target: FitTarget) -> float:
    """The exact factor that brings a ``width``×``height`` picture to ``target`` (below 1
    when the picture is larger already)."""
    long_edge = target.long_edge_px
    if long_edge is None:
        assert target.megapixels is not None
        return math.sqrt(target.megapixels * 1e6 / (width * height))
    return long_edge / max(width, height)


def meets(width: int, height: int, target: FitTarget) -> bool:
    """Whether the picture is already as large as the target asks: nothing to gain."""
    long_edge = target.long_edge_px
    if long_edge is None:
        assert target.megapixels is not None
        return width * height >= round(target.megapixels * 1e6)
    return max(width, height) >= long_edge


def neat(width: int, height: int, scale: float) -> float:
    """``scale`` with as few decimals (2 to 6) as still give the same long edge in pixels:
    what is sent and what a ``{scale}`` in a file name shows."""
    long_side = max(width, height)
    exact = round(long_side * scale)
    for places in range(2, 7):
        rounded = round(scale, places)
        if round(long_side * rounded) == exact:
            return rounded
    return scale


def typical_megapixels(target: FitTarget) -> float:
    """The output size the target means for a typical picture, from the target alone: its
    megapixels, or its long edge at the print's aspect (3:2 for a long edge)."""
    if target.megapixels is not None:
        return target.megapixels
    long_edge = target.long_edge_px
    assert long_edge is not None
    aspect = target.print_aspect or TYPICAL_ASPECT
    return long_edge * round(long_edge * aspect) / 1e6
