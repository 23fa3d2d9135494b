"""A folder's ``fit:``: the size each picture is upscaled to, instead of a fixed factor.

Photographers think in print sizes and pixels on the long edge ("7087 px at 300 dpi"), not
in factors. A target is one of: a long edge in pixels, a print size at a resolution (its
long edge in pixels follows), or a number of megapixels. images/fit.py turns a target into
each picture's own factor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: What a print size may be measured in, in inches per unit.
PRINT_UNITS = {"cm": 1 / 2.54, "mm": 1 / 25.4, "in": 1.0}
#: ``40x60cm``, ``16 x 24 in``, ``13×18cm``: the two sides in either order, then the unit.
PRINT_PATTERN = r"^\s*([0-9]+(?:\.[0-9]+)?)\s*[x×X]\s*([0-9]+(?:\.[0-9]+)?)\s*(cm|mm|in)\s*$"
#: The print resolution a print target assumes when it names none (what labs ask for).
DEFAULT_PRINT_DPI = 300.0


def print_sides(text: str) -> tuple[float, float, str]:
    """``"40x60cm"`` → (40.0, 60.0, "cm"); ValueError with the accepted forms otherwise."""
    match = re.match(PRINT_PATTERN, text) if isinstance(text, str) else None
    if match is None or float(match[1]) <= 0 or float(match[2]) <= 0:
        raise ValueError(f"must be a print size such as 40x60cm, 130x180mm or 16x24in, "
                         f"not {text!r}")
    return float(match[1]), float(match[2]), match[3]


@dataclass(frozen=True)
class FitTarget:
    """The size every picture of a folder is upscaled to; exactly one of ``long_edge``,
    ``print`` (with ``dpi``) and ``megapixels`` is set."""

    #: Pixels on the picture's long edge.
    long_edge: int | None = None
    #: A print size (``40x60cm``); the picture's long edge is fitted to the print's long edge
    #: at ``dpi``, its short edge keeps the picture's aspect (nothing is cropped).
    print: str | None = None
    dpi: float | None = None
    megapixels: float | None = None
    #: A picture that already meets the target is written as it is, without paying; False
    #: sends it to the upscaler at a factor of 1 (for its enhancement alone).
    enlarge_only: bool = True

    @property
    def long_edge_px(self) -> int | None:
        """The long edge the target asks for, in pixels (None for a megapixel target)."""
        if self.long_edge is not None:
            return self.long_edge
        if self.print is not None:
            a, b, unit = print_sides(self.print)
            return round(max(a, b) * PRINT_UNITS[unit] * (self.dpi or DEFAULT_PRINT_DPI))
        return None

    @property
    def print_aspect(self) -> float | None:
        """The print's short side over its long side (None for other targets)."""
        if self.print is None:
            return None
        a, b, _ = print_sides(self.print)
        return min(a, b) / max(a, b)

    def describe(self) -> str:
        """The target in words, for ``check`` and the logs."""
        if self.megapixels is not None:
            return f"{self.megapixels:g} MP"
        if self.print is not None:
            return (f"{self.print} at {self.dpi or DEFAULT_PRINT_DPI:g} dpi "
                    f"({self.long_edge_px} px on the long edge)")
        return f"{self.long_edge} px on the long edge"

    def plain(self) -> dict[str, Any]:
        """The target as plain data (journaled with a job's settings), unset keys left out."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_plain(cls, data: dict[str, Any] | None) -> FitTarget | None:
        return None if not data else cls(**data)
