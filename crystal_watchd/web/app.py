"""The local web page, /metrics and /healthz: aiohttp in the daemon's own event loop.

Pages are rendered on the server (Jinja2) and work with JavaScript off; with it on, one
small script listens to /events (server-sent events fed by the journal) and swaps in the
fresh page. Routes take job ids, never paths. The page reads the journal on its own
thread and acts only through the daemon's own calls (retry a job, resume = reload).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections import OrderedDict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import jinja2
from aiohttp import web
from markupsafe import Markup

from .. import __version__, logs
from ..config import Config
from ..config.hosts import MAX_HOST, HostCheck
from ..events import Events, JobChanged
from ..images.pixels import PixelPool
from ..jobs import JobState
from ..journal import journal_file, open_journal
from ..waits import within
from . import auth
from .chart import spend_bars
from .metrics import CONTENT_TYPE, Metrics
from .review import Review
from .thumbs import KINDS, ThumbCache
from .view import (
    JournalView,
    LiveState,
    ago,
    attempts_shown,
    error_report,
    not_taken,
    phases_shown,
    scale_shown,
    scrubbed,
    settings_shown,
    when,
)

log = logs.get(__name__)
#: The CSP hash of an empty inline stylesheet: the compare page's empty <style> marker (it
#: keeps OpenSeadragon from injecting one of its own) and nothing else.
EMPTY_STYLE = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
SERVER = web.AppKey("server", "WebServer")
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
MAX_PHASES = 5000
KEEPALIVE = 25.0
#: At most one http_host_refused line per this many seconds: a page that keeps trying
#: must not fill the log.
HOST_LOG_EVERY = 60.0


class Daemon(Protocol):
    """What the page needs from the running service."""

    config: Config
    events: Events
    pixels: PixelPool

    def live_state(self) -> LiveState: ...
    def retry_job(self, job_id: int) -> bool: ...
    def retry_deliveries(self, ids: list[int] | None) -> int: ...
    def approve(self, folders: list[str] | None) -> int: ...
    def resume(self) -> None: ...


class WebServer:
    def __init__(self, daemon: Daemon, token: str | None):
        self.daemon = daemon
        config = daemon.config
        #: The SQLite file whose write lock /healthz takes; None for a shared database.
        self.journal_file = None if config.journal else journal_file(config)
        self.token = token
        self.sessions = auth.Sessions()
        self.view = JournalView(lambda: open_journal(config, readonly=True))
        self.thumbs = ThumbCache(daemon.config.state_dir / "thumbs",
                                 int(daemon.config.http.thumbs_cache_mb * 1024 * 1024),
                                 daemon.pixels)
        self.review = Review(self)
        self.metrics = Metrics(self.view, daemon.live_state,
                               lambda: [f.name for f in self.daemon.config.folders])
        self._streams: set[asyncio.Queue] = set()
        #: job id → what this daemon saw that the journal does not keep (a retry, the output
        #: written) → Unix time; the journal's own times are added by ``phases_shown``
        self.phases: OrderedDict[int, dict[str, float]] = OrderedDict()
        self._unsubscribe = daemon.events.subscribe(self._on_change)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("crystal_watchd.web", "templates"),
            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        # Every page names the version that serves it (the header's brand).
        self.templates.globals["version"] = __version__
        self.templates.filters.update(when=when, ago=ago, usd=lambda v: f"${v or 0:.2f}",
                                     clean=lambda v: logs.scrub(str(v)) if v else "",
                                     settings_shown=settings_shown, scale_shown=scale_shown,
                                     attempts_shown=attempts_shown)
        static = resources.files("crystal_watchd.web") / "static"
        self.static = {p.name: p.read_bytes() for p in static.iterdir() if p.is_file()}
        self.runner: web.AppRunner | None = None
        self.url: str | None = None
        #: Known once the port is (``listen: …:0`` picks one at start).
        self.hosts: HostCheck | None = None
        self._host_logged = -HOST_LOG_EVERY
        self._hosts_refused = 0

    # -- life cycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._own_host, self._guard],
                              client_max_size=64 * 1024)
        app[SERVER] = self
        app.router.add_get("/", self.overview)
        app.router.add_get("/jobs", self.recent)
        app.router.add_get("/failures", self.failures)
        app.router.add_get(r"/jobs/{job_id:\d+}", self.job)
        app.router.add_post(r"/jobs/{job_id:\d+}/retry", self.retry)
        app.router.add_post("/resume", self.resume)
        app.router.add_post("/deliveries/retry", self.retry_deliveries)
        app.router.add_post("/approve", self.approve)
        app.router.add_get(r"/thumbs/{job_id:\d+}/{kind:before|after}.jpg", self.thumb)
        self.review.register(app)
        app.router.add_get("/events", self.stream)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get(r"/static/{name:[a-z0-9_.-]+}", self.static_file)
        return app

    async def start(self) -> bool:
        http = self.daemon.config.http
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, http.host, http.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            # The page is a window, not the work: the daemon carries on without it.
            log.error("http_not_started", listen=f"{http.host}:{http.port}",
                      error=exc.strerror or str(exc))
            await self.stop()
            return False
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        self.hosts = HostCheck.build(http.host, port, http.allowed_hosts, http.trusted_proxies)
        log.info("http_listening", url=self.url, token_required=self.token is not None,
                 hosts=self.hosts.shown())
        return True

    async def stop(self) -> None:
        self._unsubscribe()
        for queue in list(self._streams):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)  # ends the stream
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.thumbs.close()
        self.review.close()
        await asyncio.to_thread(self.view.close)

    def _on_change(self, event: JobChanged) -> None:
        self.thumbs.on_change(event)
        self.metrics.on_change(event)
        job = event.job
        retried = event.before == JobState.FAILED
        written = "outputs" in event.changed and bool(job.outputs)
        if retried:  # this attempt's timings start afresh
            self.phases[job.id] = {"retried": event.at}
        elif written:
            self.phases.setdefault(job.id, {})["output_written"] = event.at
        if retried or written:
            self.phases.move_to_end(job.id)
            while len(self.phases) > MAX_PHASES:
                self.phases.popitem(last=False)
        note = {"job": job.id, "folder": job.folder, "state": job.state.value}
        for queue in self._streams:
            if not queue.full():
                queue.put_nowait(note)

    # -- guard ----------------------------------------------------------------------------

    @web.middleware
    async def _own_host(self, request: web.Request, handler) -> web.StreamResponse:
        """Answer only requests sent to one of the page's own names (config/hosts.py)."""
        headers = request.headers
        host = None if self.hosts is None else self.hosts.effective(
            headers.get("Host"), headers.get("X-Forwarded-Host"), request.remote)
        if self.hosts is None or not self.hosts.allows(host):
            self._hosts_refused += 1
            now = time.monotonic()
            if now - self._host_logged >= HOST_LOG_EVERY:
                self._host_logged = now
                log.warning("http_host_refused", host=(host or "")[:MAX_HOST],
                            peer=request.remote, path=request.path[:200],
                            refused_since_last=self._hosts_refused,
                            hint="add the name to http.allowed_hosts if it is yours")
                self._hosts_refused = 0
            return web.Response(status=421, text="421: this page answers only to its own "
                                "host names (see http.allowed_hosts)\n")
        request["host"] = host
        return await handler(request)

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(auth.COOKIE))
        request["session"] = session
        signed_in = session is not None and session.signed_in
        if (self.token and not auth.is_public(request.path)
                and not (auth.token_matches(self.token, auth.bearer(request)) or signed_in)):
            return self._unauthorized(request)
        if request.method == "POST":
            if not auth.same_origin(request, request["host"]):
                raise web.HTTPForbidden(text="cross-site request refused\n")
            if request.path != "/login":
                form = await request.post()
                if not auth.form_token_ok(session, form.get(auth.FORM_FIELD)):
                    raise web.HTTPForbidden(text="missing or stale form token; reload the "
                                                 "page and try again\n")
        response = await handler(request)
        if request.get("new_session_id"):
            auth.set_cookie(request, response, request["new_session_id"])
        return response

    def _unauthorized(self, request: web.Request) -> web.Response:
        headers = {"WWW-Authenticate": 'Bearer realm="crystal-watchd"'}
        if "text/html" in request.headers.get("Accept", ""):
            body = self.templates.get_template("login.html").render(
                next=request.path_qs, error=None, page="login")
            return web.Response(text=body, status=401, content_type="text/html", headers=headers)
        return web.Response(text="401: token required\n", status=401, headers=headers)

    def _session(self, request: web.Request) -> auth.Session:
        session = request.get("session")
        if session is None:
            session_id, session = self.sessions.new(signed_in=self.token is None)
            request["session"], request["new_session_id"] = session, session_id
        return session

    def _page(self, request: web.Request, template: str, **context: Any) -> web.Response:
        session = self._session(request)
        live = self.daemon.live_state()
        body = self.templates.get_template(template).render(
            form_token=session.form_token, live=live, signed_in=self.token is not None,
            now=time.time(), **context)
        return web.Response(text=body, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; "
                                     f"img-src 'self'; style-src 'self' {EMPTY_STYLE}; "
                                     "script-src 'self'; "
                                     "frame-ancestors 'none'",
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "same-origin"})

    # -- pages ----------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        folders = [f.name for f in self.daemon.config.folders]
        data = await self.view.call(self.view.overview, folders, time.time())
        hooks = await self.view.call(self.view.delivery_counts)
        not_out = await self.view.call(not_taken, self.view)
        return self._page(request, "overview.html", page="overview", data=data, hooks=hooks,
                          not_out=not_out,
                          chart=Markup(spend_bars(data.spend_by_day)),
                          daily_usd=self.daemon.config.budget.daily_usd,
                          confirm_above_usd=self.daemon.config.budget.confirm_above_usd)

    async def recent(self, request: web.Request) -> web.Response:
        folder = request.query.get("folder") or None
        jobs = await self.view.call(self.view.recent, 48, folder)
        return self._page(request, "jobs.html", page="jobs", jobs=jobs, folder=folder,
                          folders=[f.name for f in self.daemon.config.folders])

    async def failures(self, request: web.Request) -> web.Response:
        def load():
            jobs = self.view.failures()
            return [(job, scrubbed(error_report(job, self._failed_dir(job.folder))))
                    for job in jobs]
        return self._page(request, "failures.html", page="failures",
                          failures=await self.view.call(load),
                          deliveries=await self.view.call(self.view.given_up))

    async def job(self, request: web.Request) -> web.Response:
        job = await self.view.call(self.view.job, int(request.match_info["job_id"]))
        if job is None:
            raise web.HTTPNotFound(text="no such job\n")
        report = None
        if job.state.value == "failed":
            report = await self.view.call(error_report, job, self._failed_dir(job.folder))
        phases = phases_shown(job, self.phases.get(job.id, {}))
        return self._page(request, "job.html", page="job", job=job, phases=phases,
                          report=scrubbed(report), **await self.review.facts(job))

    def _failed_dir(self, folder: str) -> Path | None:
        cfg = self.daemon.config.folder(folder)
        return cfg.failed_dir if cfg else None

    # -- actions --------------------------------------------------------------------------

    async def retry(self, request: web.Request) -> web.Response:
        job_id = int(request.match_info["job_id"])
        if not await self.daemon.retry_job(job_id):
            raise web.HTTPConflict(text="this job is not failed (or its folder is gone)\n")
        log.info("retry_requested", job_id=job_id, source="web")
        raise web.HTTPSeeOther(f"/jobs/{job_id}")

    async def retry_deliveries(self, request: web.Request) -> web.Response:
        form = await request.post()
        wanted = form.get("delivery")
        ids = [int(wanted)] if isinstance(wanted, str) and wanted.isdigit() else None
        count = await self.daemon.retry_deliveries(ids)
        log.info("hook_retry_requested", deliveries=count, source="web")
        raise web.HTTPSeeOther("/failures")

    async def approve(self, request: web.Request) -> web.Response:
        """Release the pictures a folder holds for approval (every folder's without one)."""
        folder = (await request.post()).get("folder")
        folders = [str(folder)] if folder else None
        if folder and self.daemon.config.folder(str(folder)) is None:
            raise web.HTTPNotFound(text="no such folder\n")
        released = await self.daemon.approve(folders)
        log.info("approve_requested", folder=folder or None, released=released, source="web")
        raise web.HTTPSeeOther("/")

    async def resume(self, request: web.Request) -> web.Response:
        log.info("resume_requested", source="web")
        self.daemon.resume()
        raise web.HTTPSeeOther("/")

    async def login_form(self, request: web.Request) -> web.Response:
        body = self.templates.get_template("login.html").render(
            next=auth.local_target(request.query.get("next")), error=None, page="login")
        return web.Response(text=body, content_type="text/html")

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        target = auth.local_target(form.get("next"))
        if self.token is None:
            raise web.HTTPSeeOther(target)
        if not auth.token_matches(self.token, str(form.get("token", "")).strip()):
            await asyncio.sleep(0.5)  # slows guessing without costing the daemon anything
            body = self.templates.get_template("login.html").render(
                next=target, error="That token is not right.", page="login")
            return web.Response(text=body, status=401, content_type="text/html")
        self.sessions.drop(request.cookies.get(auth.COOKIE))
        session_id, _ = self.sessions.new(signed_in=True)
        response = web.HTTPSeeOther(target)
        auth.set_cookie(request, response, session_id)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.drop(request.cookies.get(auth.COOKIE))
        response = web.HTTPSeeOther("/login" if self.token else "/")
        response.del_cookie(auth.COOKIE, path="/")
        raise response

    # -- files, streams, machine endpoints ---------------------------------------------------

    async def thumb(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        job = await self.view.call(self.view.job, int(request.match_info["job_id"]))
        path = None if job is None or kind not in KINDS else await self.thumbs.get(job, kind)
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=86400",
                                               "Content-Type": "image/jpeg"})

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.static:
            raise web.HTTPNotFound()
        return web.Response(body=self.static[name],
                            content_type=STATIC_TYPES.get(Path(name).suffix, "text/plain"),
                            headers={"Cache-Control": "public, max-age=3600"})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one line per job change; the page's script refreshes on it."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        self._streams.add(queue)
        try:
            await response.write(b"retry: 3000\n\n")
            while True:
                try:
                    note = await within(queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if note is None:
                    break
                await response.write(f"event: job\ndata: {json.dumps(note)}\n\n".encode())
        except ConnectionResetError:
            pass  # the browser went away; a cancellation (a shutdown) goes on up
        finally:
            self._streams.discard(queue)
        return response

    async def prometheus(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while this loop answers and the journal takes writes; 503 otherwise."""
        try:
            if self.journal_file is not None:
                await within(asyncio.to_thread(_journal_writable, self.journal_file), 5)
            else:  # the shared database answers on the view's own connection
                await within(self.view.call(
                    lambda: self.view.journal.query("SELECT 1 AS one")), 5)
            ok, problem = True, None
        except Exception as exc:  # noqa: BLE001 - whatever the store raises, it is unhealthy
            ok, problem = False, str(exc) or type(exc).__name__
        live = self.daemon.live_state()
        since = live.fal_unreachable_since
        # Still 200 while fal is away: the daemon itself is alive and keeps every file.
        body = {"status": "ok" if ok else "unhealthy", "journal": "writable" if ok else problem,
                "in_flight": live.in_flight, "paused": live.paused,
                "fal_reachable": since is None,
                "fal_unreachable_since": None if since is None else
                datetime.fromtimestamp(since, timezone.utc).isoformat(timespec="seconds"),
                "waiting_for": live.waiting_for_fal}
        return web.json_response(body, status=200 if ok else 503)


def _journal_writable(path: Path) -> None:
    """Take the journal's write lock and let it go: proves the file, its directory and the
    disk accept a write right now, without writing anything."""
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise OSError(f"{path} is not writable")
    db = sqlite3.connect(path, timeout=2)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.rollback()
    finally:
        db.close()
