"""Checks made before any money is spent: does the file decode, and can the output exist?

Everything here is pure CPU work on bytes already read; callers run it in a thread.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..config import MAX_OUTPUT_SIDE, FitTarget, FolderConfig
from ..errors import PermanentJobError
from . import containers, formats, metadata
from . import fit as fitting
from .metadata import Metadata

# Our own pixel limit (max_input_megapixels) is checked on the declared size before any
# pixel is decoded, so Pillow's global bomb guard is replaced by a per-folder one.
Image.MAX_IMAGE_PIXELS = None

#: Formats fal takes as they are, and the modes of those it reads as we mean them.
FAL_ACCEPTS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
               "GIF": "image/gif"}
_AS_IS_MODES = ("RGB", "L", "RGBA", "LA", "P")
#: Formats an output keeps when ``output_format: same``; others are written as PNG.
SAME_OK = {"JPEG", "PNG", "WEBP", "TIFF", "BMP"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
#: The largest side each output format can store (fal's own cap is MAX_OUTPUT_SIDE).
FORMAT_MAX_SIDE = {"WEBP": 16383, "JPEG": 65535}
_GREY = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def target_format(folder: FolderConfig, source_format: str) -> str:
    """The Pillow format the folder writes for an input of ``source_format``."""
    if folder.output_format != "same":
        return _PIL_FORMAT[folder.output_format]
    if source_format in formats.PHONE_FORMATS:
        return "JPEG"  # HEIC/AVIF photos: the most widely readable photo format
    return source_format if source_format in SAME_OK else "PNG"


@dataclass
class SourceImage:
    """An input image, checked, and what must be carried over to the output."""

    #: Upright pixels in RGB, RGBA, L or LA; None when only the original bytes are needed
    #: (sent as they are) or once the backend no longer needs them.
    image: Image.Image | None
    format: str  # Pillow's name: JPEG, PNG, WEBP, TIFF, BMP, GIF …
    meta: Metadata
    reoriented: bool
    frames: int
    width: int
    height: int
    #: The folder's output format for this input (JPEG, PNG, WEBP, TIFF, BMP).
    target: str = "PNG"
    #: The original bytes can go to the upscaler unchanged (an accepted format, upright,
    #: one frame, a plain mode, nothing to flatten).
    as_is: bool = False
    #: The input has real transparency and the output format can keep it.
    has_alpha: bool = False
    #: The input is greyscale (a re-encoded output is written as greyscale too).
    grey: bool = False
    #: What was changed to make the input usable, for the log.
    conversions: tuple[str, ...] = ()

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
    #: The scale was lowered to fit the output limits (or the upscaler's range).
    reduced: bool = False
    #: The scale asked for: the folder's scale_factor, or the one its fit target needs.
    requested: float = 0.0
    #: The picture already meets the folder's fit target: it is written as it is, without
    #: the upscaler, and nothing is paid.
    as_is: bool = False

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def paid_megapixels(self) -> float:
        """What the upscaler bills for this output (nothing for a picture kept as it is)."""
        return 0.0 if self.as_is else self.megapixels


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """Deep greyscale (16/32-bit integer, float) to 8-bit L, spreading its real range."""
    if image.mode.startswith("I;16"):
        # Pillow has no extrema for the big-endian I;16B, and 16-bit is 0–65535 anyway.
        return image.convert("I").point(lambda v: v * 255 / 65535).convert("L")
    low, high = image.getextrema()
    if image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    elif low >= 0 and high <= 255:
        low, high = 0, 255
    elif low >= 0 and high <= 65535:
        low, high = 0, 65535
    span = (high - low) or 1
    base = image if image.mode in ("I", "F") else image.convert("I")
    return base.point(lambda v: (v - low) * 255 / span).convert("L")


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"),
                                        ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(image, transform)


def _cmyk_to_rgb(image: Image.Image, meta: Metadata) -> tuple[Image.Image, str]:
    if meta.icc_space == "cmyk" and meta.icc_profile:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(meta.icc_profile))
            converted = ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"),
                                                  outputMode="RGB")
            if converted is not None:
                return converted, "CMYK converted to sRGB through its ICC profile"
        except Exception:  # noqa: BLE001 - fall back to the plain conversion below
            pass
    return image.convert("RGB"), "CMYK converted to RGB"


def working_mode(image: Image.Image, meta: Metadata) -> tuple[Image.Image, str | None]:
    """``image`` in RGB, RGBA, L or LA, and a note of what was converted (None if nothing)."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return image, None
    if mode == "1":
        return image.convert("L"), "1-bit converted to 8-bit grey"
    if mode == "P":
        has_alpha = "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB"), "palette expanded"
    if mode == "PA":
        return image.convert("RGBA"), "palette expanded"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_eight_bits(image), f"{mode} greyscale reduced to 8 bits"
    if mode == "CMYK":
        return _cmyk_to_rgb(image, meta)
    if mode == "LAB":
        return _lab_to_rgb(image), "CIE Lab converted to sRGB"
    if mode in ("RGBa", "La"):
        return image.convert("RGBA" if mode == "RGBa" else "LA"), "alpha un-premultiplied"
    try:
        return image.convert("RGBA" if "A" in mode else "RGB"), f"{mode} converted to RGB"
    except Exception as exc:  # noqa: BLE001 - a mode Pillow cannot convert
        raise PermanentJobError(f"the image's colour mode {mode} cannot be converted to RGB "
                                f"({exc})", kind="unsupported_mode") from None


def _real_alpha(image: Image.Image) -> bool:
    """Whether any pixel is not fully opaque."""
    if image.mode not in ("RGBA", "LA"):
        return False
    return image.getchannel("A").getextrema()[0] < 255


def flatten(image: Image.Image) -> Image.Image:
    """Composite onto white (for formats without alpha; dark fringes would show otherwise)."""
    background = Image.new("RGB" if image.mode == "RGBA" else "L", image.size, "white")
    background.paste(image.convert(background.mode), mask=image.getchannel("A"))
    return background


def _open(data: bytes) -> Image.Image:
    if not data:
        raise PermanentJobError("the file is empty (0 bytes)", kind="empty_file")
    formats.register_decoders()  # HEIC/HEIF
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise PermanentJobError("not an image Pillow can read (the content does not match any "
                                "known image format)", kind="not_an_image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise PermanentJobError(f"the image header cannot be read: {exc}",
                                kind="not_an_image") from None


#: Formats whose completeness is proven from their structure when their bytes are sent as
#: they are: a JPEG's segments and scans up to its end marker, a PNG's chunk checksums.
_PROVEN_WITHOUT_DECODING = {"JPEG": containers.check_jpeg,
                            "PNG": containers.check_png_chunks}


def declared_megapixels(data: bytes) -> float:
    """The input's size from its header alone (0 if unreadable): for the pixel pool."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height / 1e6
    except Exception:  # noqa: BLE001 - inspect() reports it properly
        return 0.0


def inspect(data: bytes, folder: FolderConfig, *, keep_pixels: bool = True) -> SourceImage:
    """Check ``data`` decodes in full; raise PermanentJobError with a plain reason if it
    cannot be used. With ``keep_pixels`` off, pixels are kept only when the original bytes
    cannot go to the upscaler as they are (and a JPEG or PNG sent as it is is proven whole
    from its structure, not decoded)."""
    image = _open(data)
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
    try:
        frames = getattr(image, "n_frames", 1)
    except Exception:  # noqa: BLE001 - a damaged frame index
        frames = 1
    fmt = image.format or "PNG"
    meta = metadata.read(image)
    turn = metadata.orientation(image)
    target = target_format(folder, fmt)
    as_is = (fmt in FAL_ACCEPTS and turn == 1 and frames == 1 and image.mode in _AS_IS_MODES
             and meta.icc_space in (None, "rgb", "grey"))
    alpha_possible = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    sent_as_is = not keep_pixels and as_is and not alpha_possible
    try:
        if sent_as_is and fmt in _PROVEN_WITHOUT_DECODING:
            # Its bytes go to the upscaler unchanged: proving the structure whole is enough,
            # and costs a twentieth of a decode (see containers).
            _PROVEN_WITHOUT_DECODING[fmt](data)
        else:
            image.seek(0)
            image.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise PermanentJobError(f"the image data is damaged or incomplete: {exc}",
                                kind="corrupt_image") from None
    conversions = []
    if frames > 1:
        conversions.append(f"first of {frames} frames/pages used")
    grey = image.mode in _GREY
    if sent_as_is:
        return SourceImage(image=None, format=fmt, meta=meta, reoriented=False, frames=frames,
                           width=width, height=height, target=target, as_is=True, grey=grey)
    pixels, note = working_mode(image, meta)
    if note:
        conversions.append(note)
    upright = ImageOps.exif_transpose(pixels) if turn != 1 else pixels
    if upright is None:  # exif_transpose returns None only when transposing in place
        upright = pixels
    has_alpha = _real_alpha(upright)
    if upright.mode in ("RGBA", "LA") and not has_alpha:
        upright = upright.convert("RGB" if upright.mode == "RGBA" else "L")
    elif has_alpha and target in ("JPEG", "BMP"):
        upright, has_alpha = flatten(upright), False
        conversions.append("transparency flattened onto white (the output format has none)")
        as_is = False
    return SourceImage(image=upright, format=fmt, meta=meta, reoriented=turn != 1,
                       frames=frames, width=upright.width, height=upright.height, target=target,
                       as_is=as_is, has_alpha=has_alpha, grey=grey,
                       conversions=tuple(conversions))


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _fits(width: int, height: int, cap_mp: float, side: int) -> bool:
    return width <= side and height <= side and width * height <= cap_mp * 1e6


def largest_scale(width: int, height: int, cap_mp: float, side: int = MAX_OUTPUT_SIDE) -> float:
    """The largest scale, to two decimals, whose output fits the caps (0 if none ≥ 1 does)."""
    bound = min(math.sqrt(cap_mp * 1e6 / (width * height)), side / width, side / height)
    scale = math.floor(bound * 100) / 100
    while scale >= 1 and not _fits(*output_size(width, height, scale), cap_mp, side):
        scale = round(scale - 0.01, 2)
    return scale if scale >= 1 else 0.0


def plan(width: int, height: int, scale: float, folder: FolderConfig,
         fmt: str | None = None) -> Plan:
    """The output size for ``scale`` within the upscaler's caps and those of the output
    format ``fmt`` (WebP stores at most 16383 px a side); reduce or refuse per ``oversize``,
    before any money is spent. A folder with ``fit`` ignores ``scale``: the factor is the one
    this picture needs to reach the target, clamped to the upscaler's range and, with a
    warning (``reduced``), to the output limits whatever ``oversize`` says."""
    cap = folder.max_output_megapixels
    side = min(MAX_OUTPUT_SIDE, FORMAT_MAX_SIDE.get(fmt or "", MAX_OUTPUT_SIDE))
    if folder.fit is not None:
        return _fitted(width, height, folder.fit, cap, side, fmt)
    out_w, out_h = output_size(width, height, scale)
    if _fits(out_w, out_h, cap, side):
        return Plan(scale, out_w, out_h, requested=scale)
    best = _largest_or_fail(width, height, scale, cap, side, fmt)
    if folder.oversize == "reduce":
        return Plan(best, *output_size(width, height, best), reduced=True, requested=scale)
    raise PermanentJobError(f"{_too_large(width, height, scale, cap, side, fmt)}; the largest "
                            f"scale that fits is ×{best:g} (set oversize: reduce to use it "
                            "automatically)", kind="output_too_large")


def _too_large(width: int, height: int, scale: float, cap: float, side: int,
               fmt: str | None) -> str:
    out_w, out_h = output_size(width, height, scale)
    limit = f"{side} px a side" + (f" (the most {fmt} can store)" if side < MAX_OUTPUT_SIDE
                                   else "")
    return (f"×{scale:g} of {width}×{height} would be {out_w}×{out_h} = "
            f"{out_w * out_h / 1e6:.1f} MP, over the limit of {cap:g} MP and {limit}")


def _largest_or_fail(width: int, height: int, scale: float, cap: float, side: int,
                     fmt: str | None) -> float:
    """The largest scale whose output fits; PermanentJobError when not even ×1 does."""
    best = largest_scale(width, height, cap, side)
    if best < 1:
        raise PermanentJobError(f"{_too_large(width, height, scale, cap, side, fmt)}; even ×1 "
                                "does not fit", kind="output_too_large")
    return best


def _fitted(width: int, height: int, target: FitTarget, cap: float, side: int,
            fmt: str | None) -> Plan:
    """The plan for a fit target: the factor this picture needs, within 1–200 and the
    output limits. A picture that meets the target already is kept as it is
    (``enlarge_only``) or sent at ×1; only the format's side limit binds a kept one, as the
    upscaler never sees it."""
    wanted = fitting.wanted_scale(width, height, target)
    if fitting.meets(width, height, target):
        if target.enlarge_only:
            if max(width, height) > side:
                _largest_or_fail(width, height, 1.0, cap, side, fmt)
            return Plan(1.0, width, height, requested=wanted, as_is=True)
        wanted = fitting.MIN_SCALE
    scale = fitting.neat(width, height, min(max(wanted, fitting.MIN_SCALE), fitting.MAX_SCALE))
    if _fits(*output_size(width, height, scale), cap, side):
        return Plan(scale, *output_size(width, height, scale),
                    reduced=wanted > fitting.MAX_SCALE, requested=wanted)
    best = _largest_or_fail(width, height, scale, cap, side, fmt)
    return Plan(best, *output_size(width, height, best), reduced=True, requested=wanted)
