"""crystal-watchd: a watched-folder daemon for Clarity AI's Crystal Upscaler on fal."""

import sys as _sys

__version__ = "0.1.0"


def _import_without_rich() -> None:
    """Import structlog and httpx while ``rich`` (and what comes with it) is hidden
    from them.

    Both import rich (and pygments, and httpx also click) whenever it is installed: structlog
    to draw pretty tracebacks on a console, httpx for its command-line client. The daemon
    uses neither, yet they would be about 20 MB of every daemon's resident memory. rich stays
    importable for the one place that draws with it (``once`` on a terminal); structlog then
    formats console tracebacks the plain way.
    """
    hidden = [name for name in ("click", "pygments", "rich") if name not in _sys.modules]
    for name in hidden:
        _sys.modules[name] = None  # type: ignore[assignment]  # ``import`` then fails fast
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            del _sys.modules[name]


_import_without_rich()
