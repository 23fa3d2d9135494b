"""Which input formats the installed libraries can decode, and the phone formats.

HEIC/HEIF (iPhones) needs pillow-heif; AVIF is read by Pillow itself when it was built with
libavif. Neither is assumed: ``unreadable_extensions`` asks the libraries, so ``check`` can
say when a listed extension would be taken and then fail every file.
"""

from __future__ import annotations

import threading

from PIL import Image, features

#: Formats phones write that few programs read: fal gets them as PNG (or JPEG when that is
#: the result), and ``output_format: same`` writes JPEG for them.
PHONE_FORMATS = ("HEIF", "AVIF")
_registered = False
_lock = threading.Lock()


def register_decoders() -> bool:
    """Teach Pillow to open HEIC/HEIF through pillow-heif (once). False if it is missing."""
    global _registered
    with _lock:
        if not _registered:
            try:
                import pillow_heif
            except ImportError:
                return False
            pillow_heif.register_heif_opener()
            _registered = True
    return True


def _heif_decodes() -> bool:
    if not register_decoders():
        return False
    import pillow_heif

    return bool(pillow_heif.libheif_info().get("decoders"))


def unreadable_extensions(extensions: tuple[str, ...]) -> list[str]:
    """The extensions in ``extensions`` no installed library can decode."""
    register_decoders()
    known = Image.registered_extensions()
    out = []
    for ext in extensions:
        fmt = known.get("." + ext.lower())
        if (fmt is None or fmt not in Image.OPEN
                or (fmt == "AVIF" and not features.check("avif"))
                or (fmt == "HEIF" and not _heif_decodes())):
            out.append(ext)
    return out


def extension_warnings(folders) -> list[str]:
    """One line per folder listing extensions its files could never be decoded from."""
    lines = []
    for i, folder in enumerate(folders):
        missing = unreadable_extensions(folder.extensions)
        if missing:
            names = ", ".join(f".{e}" for e in missing)
            lines.append(f"folders[{i}].extensions (folder '{folder.name}'): {names} files "
                         "cannot be decoded by the installed libraries and would fail "
                         "(HEIC/HEIF needs pillow-heif; AVIF needs a Pillow built with AVIF "
                         "support, 11.2 or later)")
    return lines
