"""``fal.cleanup``: once a job's output is safely written, delete what its request left at
fal (the stored input/output JSON and the result files on fal's public CDN)."""

from __future__ import annotations

import asyncio

from .. import logs
from ..config import FalConfig
from ..waits import within
from .platform import Platform, PlatformError, PlatformRefused

log = logs.get(__name__)

#: A deletion that takes longer than this is left (the files expire with fal.cdn_expiry).
DELETE_TIMEOUT = 30.0


class Tidy:
    def __init__(self, cfg: FalConfig, platform: Platform):
        self.on = cfg.cleanup
        self._platform = platform

    async def request_done(self, request_id: str) -> None:
        """Delete the request's payloads; never raises (the output is already written)."""
        if not self.on:
            return
        try:
            failed = await within(self._platform.delete_payloads(request_id),
                                  DELETE_TIMEOUT)
        except PlatformRefused as exc:
            # Deletion needs an admin-scope key: say so once, not for every job (nor again
            # for a deletion that was already under way when the first refusal came).
            if not self.on:
                return
            self.on = False
            log.warning("fal_cleanup_disabled", reason=f"fal refused to delete payloads ({exc})",
                        note="fal.cleanup needs an ADMIN-scope key; cleanup is off until the "
                             "configuration is reloaded")
            return
        except (PlatformError, asyncio.TimeoutError) as exc:
            log.warning("fal_cleanup_failed", request_id=request_id,
                        error=str(exc) or "timed out",
                        note="the files expire with fal.cdn_expiry")
            return
        if failed:
            log.warning("fal_cleanup_incomplete", request_id=request_id, not_deleted=len(failed))
        else:
            log.info("fal_payloads_deleted", request_id=request_id)
