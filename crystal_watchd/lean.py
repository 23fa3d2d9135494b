"""Keep the daemon's memory lean: import structlog and httpx with ``rich`` hidden.

Both import rich (and pygments, and httpx also click) whenever it is installed: structlog to
draw pretty tracebacks on a console, httpx for its command-line client. The daemon uses
neither, yet they would be about 20 MB of every daemon's resident memory. rich stays
importable for the one place that draws with it (``once`` on a terminal); structlog then
formats console tracebacks the plain way.

This is a process-wide change of ``sys.modules``, so only the program's entry point
(``crystal_watchd.__main__``) calls it, before anything imports structlog or httpx; a
library user importing the package gets no such side effect.
"""

from __future__ import annotations

import sys


def import_without_rich() -> None:
    """Import structlog and httpx while rich, pygments and click are hidden from them."""
    hidden = [name for name in ("click", "pygments", "rich") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # ``import`` then fails fast
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]
