"""Any decoded picture as 8-bit RGB for the page, high bit depths tone-mapped.

Pillow's own conversion of a 16-bit ("I;16"), 32-bit integer ("I") or float ("F") picture
to 8 bits clips every value above 255, so a 16-bit TIFF shows pure white. Here the value
range is scaled linearly onto 0…255 instead: full 16-bit data by its 65535, 12-bit sensor
data (nothing above 4095) by 4095, floats in 0…1 by 1, anything larger by its maximum.
"""

from __future__ import annotations

from PIL import Image

HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
TRANSPARENT_MODES = ("RGBA", "LA", "P", "PA", "RGBa", "La")


def white_point(mode: str, largest: float) -> float:
    """The value shown as white for data of ``mode`` whose largest value is ``largest``."""
    if mode == "F":
        return 1.0 if largest <= 1.0 else largest
    for full in (255, 4095, 65535):
        if largest <= full:
            return float(full)
    return float(largest)


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` in mode RGB, 8 bits a channel; transparency flattened onto white."""
    if image.mode in HIGH_BIT_MODES:
        wide = image if image.mode in ("I", "F") else image.convert("I")
        low, high = wide.getextrema()
        top = white_point(image.mode, float(high or 0))
        if top > 255 or image.mode == "F":
            wide = wide.point(lambda v: v * (255.0 / top))
        return wide.convert("L").convert("RGB")
    if image.mode in TRANSPARENT_MODES:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")
