"""Checks made before any money is spent: does the file decode, and can the output exist?

Everything here is pure CPU work on bytes already read; callers run it in a thread.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from . import formats
from .config import MAX_OUTPUT_SIDE, FolderConfig
from .errors import PermanentJobError

# Our own pixel limit (max_input_megapixels) is checked on the declared size before any
# pixel is decoded, so Pillow's global bomb guard is replaced by a per-folder one.
Image.MAX_IMAGE_PIXELS = None

EXIF_ORIENTATION = 0x0112
#: Formats whose pixels we keep in their own mode; anything else is converted to RGB(A).
_KEEP_MODES = ("RGB", "RGBA", "L", "LA")


@dataclass
class SourceImage:
    """A decoded, upright input image and what must be carried over to the output."""

    image: Image.Image | None  # None once the backend no longer needs the pixels
    format: str  # Pillow's name: JPEG, PNG, WEBP, TIFF, BMP, GIF …
    icc_profile: bytes | None
    exif: bytes | None  # orientation reset to 1: the pixels are already upright
    reoriented: bool
    frames: int
    width: int
    height: int

    def drop_pixels(self) -> None:
        """Free the decoded pixels (tens of MB for a photo) while the job waits on the
        network; only the metadata is needed to write the output."""
        self.image = None


@dataclass(frozen=True)
class Plan:
    """The output the job will produce, and what it costs."""

    scale: float
    width: int
    height: int
    reduced: bool = False

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def _normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in _KEEP_MODES:
        return image
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale down to 8 bits rather than clip at 255.
        return image.convert("I").point(lambda v: v / 257).convert("L")
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGBA" if "A" in image.mode else "RGB")


def inspect(data: bytes, folder: FolderConfig) -> SourceImage:
    """Decode ``data`` fully; raise PermanentJobError with a plain reason if it cannot be used."""
    if not data:
        raise PermanentJobError("the file is empty (0 bytes)", kind="empty_file")
    formats.register_decoders()  # HEIC/HEIF
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise PermanentJobError("not an image Pillow can read (the content does not match any "
                                "known image format)", kind="not_an_image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise PermanentJobError(f"the image header cannot be read: {exc}",
                                kind="not_an_image") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise PermanentJobError(f"the image has no pixels ({width}×{height})", kind="no_pixels")
    megapixels = width * height / 1e6
    if megapixels > folder.max_input_megapixels:
        raise PermanentJobError(
            f"the image declares {width}×{height} = {megapixels:.1f} MP, over this folder's "
            f"max_input_megapixels of {folder.max_input_megapixels:g}", kind="input_too_large")
    if width < 2 or height < 2:
        raise PermanentJobError(f"the image is {width}×{height}; the upscaler needs at least 2×2",
                                kind="too_small")
    frames = getattr(image, "n_frames", 1)
    try:
        image.seek(0)
        image.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise PermanentJobError(f"the image data is damaged or incomplete: {exc}",
                                kind="corrupt_image") from None
    fmt = image.format or "PNG"
    icc = image.info.get("icc_profile")
    exif = image.getexif()
    orientation = exif.get(EXIF_ORIENTATION, 1)
    upright = ImageOps.exif_transpose(image) if orientation not in (None, 1) else image
    exif_bytes = None
    if len(exif):
        exif[EXIF_ORIENTATION] = 1
        exif_bytes = exif.tobytes()
    return SourceImage(image=_normalise_mode(upright), format=fmt, icc_profile=icc,
                       exif=exif_bytes, reoriented=orientation not in (None, 1), frames=frames,
                       width=upright.width, height=upright.height)


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _fits(width: int, height: int, cap_mp: float) -> bool:
    return width <= MAX_OUTPUT_SIDE and height <= MAX_OUTPUT_SIDE and width * height <= cap_mp * 1e6


def largest_scale(width: int, height: int, cap_mp: float) -> float:
    """The largest scale, to two decimals, whose output fits the caps (0 if none ≥ 1 does)."""
    bound = min(math.sqrt(cap_mp * 1e6 / (width * height)), MAX_OUTPUT_SIDE / width,
                MAX_OUTPUT_SIDE / height)
    scale = math.floor(bound * 100) / 100
    while scale >= 1 and not _fits(*output_size(width, height, scale), cap_mp):
        scale = round(scale - 0.01, 2)
    return scale if scale >= 1 else 0.0


def plan(width: int, height: int, scale: float, folder: FolderConfig) -> Plan:
    """The output size for ``scale``, within the caps; reduce or refuse per ``oversize``."""
    cap = folder.max_output_megapixels
    out_w, out_h = output_size(width, height, scale)
    if _fits(out_w, out_h, cap):
        return Plan(scale, out_w, out_h)
    best = largest_scale(width, height, cap)
    what = (f"×{scale:g} of {width}×{height} would be {out_w}×{out_h} = "
            f"{out_w * out_h / 1e6:.1f} MP, over the limit of {cap:g} MP and "
            f"{MAX_OUTPUT_SIDE} px a side")
    if best < 1:
        raise PermanentJobError(f"{what}; even ×1 does not fit", kind="output_too_large")
    if folder.oversize == "reduce":
        return Plan(best, *output_size(width, height, best), reduced=True)
    raise PermanentJobError(f"{what}; the largest scale that fits is ×{best:g} "
                            "(set oversize: reduce to use it automatically)",
                            kind="output_too_large")
