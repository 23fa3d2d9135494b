"""A result becomes the folder's output file, and is read back before it counts.

Two ways, chosen per result:
- **Pass through.** The result already has the output's format and nothing asks for a pixel
  change: its bytes are the output. Only the container is rewritten to carry the source's
  EXIF and ICC (containers.py); no pixel is decoded or encoded.
- **Re-encode.** Another format, transparency to restore, or an in-memory image (the local
  backend): decode, convert, encode. The caller runs this in the pixel pool.

Either way the temp file is read back (a reduced decode for JPEG, a streamed check for PNG,
a full decode otherwise) and must have the expected size and a sane mode before it may get
its final name. A paid result that cannot be written in the folder's format is kept in its
own format instead, never thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from ..errors import ConversionError, RetryableError
from . import carriers, containers, output, pixels, provenance
from .metadata import Metadata
from .result import ResultImage

#: Modes each format may hold in an output; anything else fails the read-back.
_SANE_MODES = {"JPEG": {"L", "RGB", "CMYK"}, "PNG": {"L", "LA", "RGB", "RGBA", "P", "I;16"},
               "WEBP": {"RGB", "RGBA"}, "TIFF": {"L", "LA", "RGB", "RGBA", "I;16", "CMYK"},
               "BMP": {"L", "RGB", "P", "1"}}
_CARRIES_METADATA = ("JPEG", "PNG", "WEBP", "TIFF")
#: Working memory per output pixel of a re-encode, for the pixel pool, where it is above the
#: pool's default (measured peaks: libwebp keeps several full-size buffers while encoding).
_BYTES_PER_PIXEL = {"WEBP": 16.0}


def bytes_per_pixel(fmt: str) -> float:
    """What re-encoding to ``fmt`` needs per output pixel (for the pixel pool's gate)."""
    return _BYTES_PER_PIXEL.get(fmt, pixels.BYTES_PER_PIXEL)


@dataclass(frozen=True)
class Target:
    """What the output must be."""

    fmt: str  # Pillow's format name
    meta: Metadata
    #: The input was greyscale: a re-encoded output is written as greyscale.
    grey: bool = False
    #: The input's alpha channel, saved at preflight, to scale up and attach to the result.
    alpha: Path | None = None
    jpeg_quality: int = 95
    webp_quality: int = 90
    #: The print resolution the output declares (pixels per inch), None to declare none.
    dpi: tuple[float, float] | None = None
    #: Where the output comes from, written into its XMP (images/provenance.py).
    made: provenance.Provenance | None = None


@dataclass(frozen=True)
class Written:
    tmp: Path
    fmt: str  # what was written: the target's format, or the result's own after a fallback
    megapixels: float
    #: Why the result was kept in its own format (None when the target format was written).
    fallback: str | None = None


def passes_through(result: ResultImage, target: Target) -> bool:
    """Whether the result's bytes can be the output as they are."""
    return (result.path is not None and target.alpha is None
            and containers.sniff(result.path) == target.fmt)


def write(result: ResultImage, target: Target, where: Path, tag: str) -> Written:
    """Write ``result`` to a hidden temp file beside ``where`` (the wanted final path) and
    read it back. Raises RetryableError if fal's bytes are damaged (fetch them again),
    ConversionError if an in-memory result cannot be written."""
    if result.path is not None and passes_through(result, target):
        return _pass_through(result.path, target, where, tag, target.fmt)
    try:
        held = [_prepare(_decode(result), target)]
        size = held[0].size
        tmp = output.write_temp(where, lambda fh: encode(held[0], target, fh), tag)
        # Let go of the pixels before decoding the output again: only one full-size copy of
        # the picture is ever alive during a read-back.
        held.clear()
        result.image = None
        read_back(tmp, target.fmt, size)
        return Written(tmp, target.fmt, size[0] * size[1] / 1e6)
    except ConversionError as exc:
        if result.path is None:
            raise  # nothing was paid for: fail the file with the reason
        fmt = containers.sniff(result.path) or "PNG"
        written = _pass_through(result.path, target, where, tag, fmt)
        return Written(written.tmp, fmt, written.megapixels,
                       fallback=f"{target.fmt} could not be written ({exc.reason}); the paid "
                                f"result was kept as {fmt}")


def _decode(result: ResultImage) -> Image.Image:
    try:
        return result.open()
    except Exception as exc:
        if result.path is None:
            raise
        raise RetryableError(f"the downloaded result does not decode: {exc}",
                             kind="download") from None


def _pass_through(source: Path, target: Target, where: Path, tag: str, fmt: str) -> Written:
    try:
        info = containers.info(source)
    except containers.DamagedFile as exc:
        raise RetryableError(f"the downloaded result is damaged: {exc}", kind="download") from None
    splice = containers.splice_jpeg if fmt == "JPEG" else containers.splice_png
    # The profile must describe the result's pixels (a CMYK JPEG's would not; see icc_for).
    mode = {1: "L", 3: "RGB"}.get(info.channels, "CMYK") if fmt == "JPEG" else (
        "L" if info.channels <= 2 else "RGB")
    blocks = carriers.for_output(target.meta, fmt, (info.width, info.height), mode, target.dpi,
                                 target.made)

    def copy(fh: BinaryIO) -> None:
        splice(source, fh, blocks)

    tmp = output.write_temp(where, copy, tag)
    try:
        read_back(tmp, fmt, (info.width, info.height), decode=False)
    except ConversionError as exc:
        tmp.unlink(missing_ok=True)
        raise RetryableError(f"the downloaded result is damaged: {exc.reason}",
                             kind="download") from None
    return Written(tmp, fmt, info.width * info.height / 1e6)


def _prepare(image: Image.Image, target: Target) -> Image.Image:
    """The result in a mode the target holds: alpha restored, greyscale kept grey."""
    if target.alpha is not None:
        with Image.open(target.alpha) as alpha:
            alpha = alpha.convert("L").resize(image.size, Image.Resampling.LANCZOS)
        base = image.convert("L" if target.grey else "RGB")
        base.putalpha(alpha)
        image = base
    elif target.grey and image.mode in ("RGB", "RGBA"):
        image = image.convert("LA" if image.mode == "RGBA" else "L")
    fmt = target.fmt
    if image.mode in ("RGBA", "LA") and fmt in ("JPEG", "BMP"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.getchannel("A"))
        image = background
    elif fmt == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    elif image.mode not in _SANE_MODES[fmt]:
        image = image.convert("RGBA" if "A" in image.mode and "RGBA" in _SANE_MODES[fmt]
                              else "RGB")
    return image


def encode(image: Image.Image, target: Target, fh: BinaryIO) -> None:
    """Encode ``image`` as the target format into ``fh`` with the source's metadata."""
    fmt = target.fmt
    params: dict[str, object] = {}
    if fmt in _CARRIES_METADATA:
        blocks = carriers.for_output(target.meta, fmt, image.size, image.mode, target.dpi,
                                     target.made)
        params.update(carriers.save_params(blocks, fmt))
    if fmt == "JPEG":
        params.update(quality=target.jpeg_quality,
                      subsampling=0 if target.jpeg_quality >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=target.webp_quality, method=4)
    elif fmt == "PNG":
        params.update(compress_level=6)
    elif fmt == "TIFF":
        params.update(compression="tiff_lzw")
    image.save(fh, fmt, **params)


def read_back(path: Path, fmt: str, size: tuple[int, int], *, decode: bool = True) -> None:
    """Open the written file: the right format, size and a sane mode, or ConversionError.

    With ``decode`` (a file this daemon encoded), JPEG is decoded at 1/8 size (every scan
    still read) and PNG proven by a streamed pass over its compressed data, never built
    whole. Without it (fal's bytes kept as they are, only their metadata rewritten) the
    structure is proven instead, as a decode would cost several times the rest of the job:
    a JPEG's segments and scans up to its end marker, a PNG's chunk checksums."""
    try:
        if fmt == "PNG":
            if decode:
                containers.check_png(path)
            else:
                containers.check_png_chunks(path)
        elif fmt == "JPEG" and not decode:
            containers.check_jpeg(path)
        with Image.open(path) as im:
            if im.format != fmt:
                raise ConversionError(f"the output is {im.format}, not {fmt}")
            if im.size != tuple(size):
                raise ConversionError(f"the output declares {im.width}×{im.height}, not "
                                      f"{size[0]}×{size[1]}")
            if im.mode not in _SANE_MODES[fmt]:
                raise ConversionError(f"the output has an unexpected mode {im.mode}")
            if decode and fmt == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            if decode and fmt != "PNG":
                im.load()
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the decoder says, the file is bad
        raise ConversionError(f"the written output does not decode: {exc}") from None
