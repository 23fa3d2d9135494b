"""/metrics through prometheus-client.

Totals that must agree with ``status --json`` (jobs per state, spend, output megapixels,
submissions) are read from the journal at scrape time, so they survive restarts. Rates and
latencies (retries, fal latency, job duration) come from the journal's events while the
daemon runs, as counters and histograms of this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .. import __version__
from ..events import JobChanged
from ..jobs import JobState
from .view import STATES, JournalView, LiveState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds; fal requests usually take a few seconds to a minute, local work far less.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
#: Phases remembered per job id for the histograms; bounded so a backlog cannot grow it.
MAX_TRACKED = 10_000


class _JournalCollector:
    def __init__(self, view: JournalView, live: Callable[[], LiveState],
                 folders: Callable[[], list[str]]):
        self.view, self.live, self.folders = view, live, folders

    def collect(self):
        info = GaugeMetricFamily("crystal_watchd_build_info",
                                 "The crystal-watchd version serving these metrics (always 1)",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        counts = self.view.run(self.view.counts)
        held = self.view.run(self.view.held)
        totals = self.view.run(self.view.totals)
        live = self.live()
        jobs = GaugeMetricFamily("crystal_watchd_jobs", "Jobs in the journal by folder and state",
                                 labels=["folder", "state"])
        names = [*self.folders(), *sorted(set(counts) - set(self.folders()))]
        for folder in names:
            for state in STATES:
                jobs.add_metric([folder, state], counts.get(folder, {}).get(state, 0))
        yield jobs
        queued = sum(c.get("queued", 0) for c in counts.values())
        yield GaugeMetricFamily("crystal_watchd_queue_depth", "Jobs waiting in the queue",
                                value=queued)
        yield GaugeMetricFamily("crystal_watchd_in_flight", "Jobs a worker holds right now",
                                value=live.in_flight)
        for name, key, doc in (
                ("crystal_watchd_submissions", "submissions", "Requests submitted to the backend"),
                ("crystal_watchd_output_megapixels", "megapixels",
                 "Output megapixels of finished jobs (what fal bills)"),
                ("crystal_watchd_spend_dollars", "usd",
                 "Dollars of every billed or possibly billed run (the spend ledger)")):
            family = CounterMetricFamily(name, doc, labels=["folder"])
            for folder in names:
                family.add_metric([folder], totals.get(folder, {}).get(key, 0))
            yield family
        bill = self.view.run(self.view.bill)
        for name, key, doc in (
                ("crystal_watchd_billed_units", "units",
                 "Units fal said it billed (x-fal-billable-units), where it said"),
                ("crystal_watchd_billed_dollars", "usd",
                 "Dollars of what fal said it billed, where it said"),
                ("crystal_watchd_billed_estimate_dollars", "estimated_usd",
                 "The estimate of the same runs (compare with crystal_watchd_billed_dollars)")):
            yield CounterMetricFamily(name, doc, value=bill[key])
        yield GaugeMetricFamily("crystal_watchd_bill_differs",
                                "1 when fal's bill and the estimate of the same runs differ",
                                value=1 if bill["differs"] else 0)
        yield CounterMetricFamily(
            "crystal_watchd_maybe_paid_twice",
            "Submissions sent again after an unanswered one could not be found at fal",
            value=self.view.run(lambda: self.view.journal.paid_twice()))
        yield GaugeMetricFamily("crystal_watchd_account_paused",
                                "1 while the backend account refuses work and submissions wait",
                                value=1 if live.paused else 0)
        yield GaugeMetricFamily("crystal_watchd_budget_reached",
                                "1 while today's spend has reached budget.daily_usd",
                                value=1 if live.over_budget else 0)
        hooks = GaugeMetricFamily("crystal_watchd_hook_deliveries",
                                  "Hook deliveries in the journal by state (gave_up: tried "
                                  "hook_attempts times; retry them from the page)",
                                  labels=["state"])
        for state, n in self.view.run(self.view.delivery_counts).items():
            hooks.add_metric([state], n)
        yield hooks
        waiting = GaugeMetricFamily(
            "crystal_watchd_awaiting_approval",
            "Pictures held because together they were estimated above "
            "budget.confirm_above_usd", labels=["folder"])
        dollars = GaugeMetricFamily(
            "crystal_watchd_awaiting_approval_dollars",
            "Estimated dollars of the pictures awaiting approval", labels=["folder"])
        for folder in names:
            count, usd = held.get(folder, (0, 0.0))
            waiting.add_metric([folder], count)
            dollars.add_metric([folder], usd)
        yield waiting
        yield dollars
        modes = GaugeMetricFamily("crystal_watchd_folder_watch_mode",
                                  "How each folder is watched (1 for the mode in use)",
                                  labels=["folder", "mode"])
        for folder, mode in live.watch_modes.items():
            modes.add_metric([folder, mode], 1)
        yield modes


class Metrics:
    def __init__(self, view: JournalView, live: Callable[[], LiveState],
                 folders: Callable[[], list[str]]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_JournalCollector(view, live, folders))
        self.retries = Counter("crystal_watchd_retries", "Attempts scheduled again, by reason",
                               ["reason"], registry=self.registry)
        self.fal_latency = Histogram(
            "crystal_watchd_fal_latency_seconds",
            "From submission to the result written beside its final name", buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.job_duration = Histogram(
            "crystal_watchd_job_duration_seconds", "From a worker taking a job to its end",
            ["outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._started: dict[int, float] = {}
        self._submitted: dict[int, float] = {}

    def on_change(self, event: JobChanged) -> None:
        job, now = event.job, time.monotonic()
        if event.started and len(self._started) < MAX_TRACKED:
            self._started.setdefault(job.id, now)
        if event.submitted and len(self._submitted) < MAX_TRACKED:
            self._submitted[job.id] = now
        if ("pending" in event.changed or "outputs" in event.changed) \
                and job.id in self._submitted:
            self.fal_latency.observe(now - self._submitted.pop(job.id))
        if event.retry:
            self.retries.labels(event.retry).inc()
        if event.retry or event.finished or (job.state == JobState.QUEUED
                                             and event.before == JobState.RUNNING):
            started = self._started.pop(job.id, None)
            if event.finished:
                self._submitted.pop(job.id, None)
            if started is not None:
                outcome = job.state.value if event.finished else "retry"
                self.job_duration.labels(outcome).observe(now - started)

    def render(self) -> bytes:
        """The exposition text; call from a thread (the journal part runs on the view's)."""
        return generate_latest(self.registry)
