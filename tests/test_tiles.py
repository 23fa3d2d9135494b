"""The compare view's bases: a picture decoded at 1/N of its size is that size (a JPEG's
draft and the reduce after it together, not one on top of the other), so a middle zoom
level is cut from pixels as fine as it shows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from crystal_watchd.web.tiles import decode, probe


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_base_is_decoded_at_the_reduction_asked_for(tmp_path: Path, fmt: str):
    """For reductions 1, 2, 4 and 8, the base of a 2000 × 1500 picture is ⌈2000 / N⌉ wide
    and looks like the picture reduced by N (a base reduced twice over would not)."""
    picture = Image.merge("RGB", [Image.effect_noise((200, 150), 80).resize((2000, 1500))
                                  for _ in range(3)])
    path = tmp_path / f"p.{fmt.lower()}"
    picture.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    probed = probe(path)
    for reduction in (1, 2, 4, 8):
        base = decode(probed, reduction)
        assert base.size == (math.ceil(2000 / reduction), math.ceil(1500 / reduction)), reduction
        expected = picture.reduce(reduction)
        difference = max(ImageStat.Stat(ImageChops.difference(base, expected)).mean)
        assert difference < 6, (reduction, difference)
