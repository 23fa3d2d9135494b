"""Delivers the journal's outbox: runs hook commands and calls webhooks after jobs.

A delivery is attempted until it succeeds (exit 0, HTTP 2xx) or ``hook_attempts`` attempts
have failed, with the retry backoff between attempts; pending deliveries outlive restarts
because they live in the journal. Nothing here can block or fail a job: the job's change is
committed before its deliveries are even looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from .. import logs
from ..config import Config
from ..config.automation import HookConfig
from ..events import JobChanged
from ..journal import JournalBase
from ..journal.outbox import Delivery
from ..waits import event_set, within

log = logs.get(__name__)
#: The most of a command's output that goes into the log.
OUTPUT_LIMIT = 4000
#: Seconds the loop sleeps at most before it looks at the outbox again (another process
#: may have asked for a retry).
POLL = 5.0
#: Deliveries attempted at once.
PARALLEL = 4
SIGNATURE_HEADER = "X-Crystal-Watchd-Signature"
DELIVERY_HEADER = "X-Crystal-Watchd-Delivery"
EVENT_HEADER = "X-Crystal-Watchd-Event"


class DeliveryError(Exception):
    """One attempt did not succeed; the message is fit for the log (no secrets)."""


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def command_env(fields: dict) -> dict[str, str]:
    def text(value) -> str:
        return "" if value is None else str(value)

    return {"CW_EVENT": fields["event"], "CW_FOLDER": fields["folder"],
            "CW_INPUT": fields["input"], "CW_OUTPUTS": "\n".join(fields["outputs"]),
            "CW_JOB_ID": str(fields["job_id"]), "CW_COST_USD": text(fields.get("cost_usd")),
            "CW_REASON": text(fields.get("reason")),
            "CW_REQUEST_ID": text(fields.get("request_id")),
            "CW_DELIVERY_ID": fields["delivery_id"]}


def hook_environ() -> dict[str, str]:
    """The daemon's environment without the fal key: a gallery uploader has no business
    with it."""
    return {k: v for k, v in os.environ.items()
            if k not in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")}


def command_argv(hook: HookConfig, fields: dict) -> list[str]:
    """``{input}``, ``{output}`` (the first output; empty for a failed job) and ``{folder}``
    filled in; no shell ever sees them."""
    outputs = fields["outputs"]
    values = {"input": fields["input"], "output": outputs[0] if outputs else "",
              "folder": fields["folder"]}
    return [arg.format(**values) for arg in hook.run]


class Deliverer:
    def __init__(self, journal: JournalBase, config: Callable[[], Config]):
        self.journal, self.config = journal, config
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def on_change(self, event: JobChanged) -> None:
        """A finished job may have new deliveries: look now."""
        if event.finished:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    await self.deliver_due()
                    due = await self.journal.next_delivery_at(h.name for h in self.config().hooks)
                except Exception:
                    log.exception("hook_loop_error", note="trying again shortly")
                    due = None
                wait = POLL if due is None else min(POLL, max(0.05, due - time.time()))
                await event_set(self._wake, wait)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver_due(self) -> int:
        """Attempt every delivery that is due now; returns how many were attempted."""
        config = self.config()
        names = [h.name for h in config.hooks]
        if not self.journal.shared and await self.journal.orphan_deliveries(names):
            log.warning("hook_deliveries_orphaned", configured_hooks=names,
                        note="their hook was removed from the configuration; put it back and "
                             "use retry-hooks to deliver them")
        hold = max((h.timeout for h in config.hooks), default=60.0) + 5.0
        count = 0
        while True:
            batch = await self.journal.claim_deliveries(time.time(), hold, limit=PARALLEL,
                                                        hooks=names)
            if not batch:
                return count
            count += len(batch)
            await asyncio.gather(*(self._attempt(config, d) for d in batch))

    async def _attempt(self, config: Config, delivery: Delivery) -> None:
        hook = next((h for h in config.hooks if h.name == delivery.hook), None)
        bound = log.bind(hook=delivery.hook, delivery_id=delivery.delivery_id,
                         job_id=delivery.job_id, hook_event=delivery.event,
                         attempt=delivery.attempts)
        try:
            if hook is None:
                raise DeliveryError("no hook of this name is configured any more")
            if hook.run:
                await self._run_command(hook, delivery, bound)
            else:
                await self._post(hook, delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a hook's trouble never reaches a job
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            error = logs.scrub(error)
            if delivery.attempts >= config.hook_attempts or hook is None:
                await self.journal.delivery_failed(delivery, error, retry_in=None)
                bound.error("hook_gave_up", error=error, attempts=delivery.attempts,
                            note="retry it from the web page or with "
                                 "'crystal-watchd retry-hooks'")
            else:
                retry_in = config.retry.delay(delivery.attempts)
                await self.journal.delivery_failed(delivery, error, retry_in=retry_in)
                bound.warning("hook_failed", error=error, retry_in=round(retry_in, 1),
                              of=config.hook_attempts)
            return
        await self.journal.delivery_done(delivery)
        bound.info("hook_delivered")

    async def _run_command(self, hook: HookConfig, delivery: Delivery, bound) -> None:
        fields = delivery.fields
        argv = command_argv(hook, fields)
        try:
            # A session of its own: at the timeout the whole process group is killed, so a
            # script's children cannot linger.
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                env={**hook_environ(), **command_env(fields)})
        except OSError as exc:
            raise DeliveryError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        try:
            out, _ = await within(proc.communicate(), hook.timeout)
        except asyncio.TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise DeliveryError(f"{Path(argv[0]).name} did not finish within "
                                f"{hook.timeout:g} s and was killed") from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        text = out.decode("utf-8", "replace").strip()
        if text:
            bound.info("hook_output", output=logs.scrub(_truncate(text)),
                       truncated=len(text) > OUTPUT_LIMIT)
        if proc.returncode != 0:
            raise DeliveryError(f"{Path(argv[0]).name} exited with {proc.returncode}")

    async def _post(self, hook: HookConfig, delivery: Delivery) -> None:
        assert hook.url is not None
        body = delivery.payload.encode()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery.delivery_id,
                   EVENT_HEADER: delivery.event, "User-Agent": "crystal-watchd"}
        if hook.secret_file is not None:
            try:
                secret = hook.secret_file.read_bytes().strip()
            except OSError as exc:
                raise DeliveryError(f"secret_file {hook.secret_file} cannot be read: "
                                    f"{exc.strerror or exc}") from None
            headers[SIGNATURE_HEADER] = sign(secret, body)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(hook.url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=hook.timeout),
                                          allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"the webhook answered HTTP {resp.status}")
        except asyncio.TimeoutError:
            raise DeliveryError(f"the webhook did not answer within {hook.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            # The URL may hold a token: say what failed, not where.
            raise DeliveryError(f"the webhook cannot be reached: {type(exc).__name__}") from None


def _truncate(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + " …"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
