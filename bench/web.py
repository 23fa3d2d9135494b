"""Benchmark the web page: render times over a large journal, and idle CPU with it on.

    python bench/web.py [--jobs 100000] [--requests 20] [--idle-seconds 30] [--out FILE]

Fills a journal with ``--jobs`` jobs (done over the last 60 days, some failed, some queued
in a folder that is not configured so nothing gets processed), starts the real daemon with
the page on, times each page, /metrics and /healthz, then measures the daemon's CPU while
nothing happens (page on, no browser open). Prints a table with each goal beside its
number and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crystal_watchd.journal import SqliteJournal  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
FOLDERS = ("weddings", "products", "scans", "phone", "archive-2019")


def fill(journal_file: Path, jobs: int) -> None:
    journal = SqliteJournal(journal_file)
    now = time.time()
    rows = []
    rng = random.Random(7)
    for i in range(jobs):
        folder = FOLDERS[i % len(FOLDERS)]
        roll = rng.random()
        state = "done" if roll < 0.96 else "failed" if roll < 0.995 else "queued"
        if state == "queued":
            folder = "retired"  # not in the config: queued, never dispatched
        finished = now - rng.random() * 60 * 86400 if state != "queued" else None
        mp = rng.uniform(4, 48) if state == "done" else None
        rows.append((folder, os.fsencode(f"/srv/in/{folder}/img{i:06d}.jpg"),
                     os.fsencode(f"img{i:06d}.jpg"), 2_000_000, i, f"{i:064x}", state,
                     json.dumps({"backend": "fal", "scale_factor": 2.0, "creativity": 1.0,
                                 "output_format": "same"}),
                     json.dumps([f"/srv/out/{folder}/img{i:06d}_x2.jpg"] if mp else []),
                     "rejected" if state == "failed" else None,
                     "fal rejected the input" if state == "failed" else None,
                     (finished or now) - 30, finished or now, finished, mp,
                     round(mp * 0.016, 6) if mp else None, 1))
    with journal.db:
        journal.db.executemany(
            "INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, settings, "
            "outputs, error_kind, reason, created_at, updated_at, finished_at, "
            "output_megapixels, cost_usd, submissions) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    journal.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def idle_cpu(work: Path, config: Path, seconds: float, *, page: bool) -> float:
    """CPU of an idle daemon over ``seconds``, as % of one core (page on or off)."""
    data = yaml.safe_load(config.read_text())
    data["http"] = {"listen": "127.0.0.1:0"} if page else None
    other = work / f"config-page-{'on' if page else 'off'}.yaml"
    other.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "crystal_watchd", "run", "--config",
                             str(other)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    try:
        time.sleep(5)  # start-up scans and imports are not idling
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - before) / (time.monotonic() - t0) * 100
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-web-bench-") as tmp:
        work = Path(tmp)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "backend": "local", "state_dir": str(work / "state"),
            "log": {"format": "json", "level": "info"}, "http": {"listen": "127.0.0.1:0"},
            "folders": [{"name": f, "inbox": str(work / "in" / f), "outbox": str(work / "out" / f)}
                        for f in FOLDERS]}))
        started = time.monotonic()
        fill(work / "state" / "journal.sqlite3", args.jobs)
        fill_seconds = time.monotonic() - started
        idle_off = idle_cpu(work, config, args.idle_seconds, page=False)
        log = work / "daemon.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "crystal_watchd", "run", "--config",
                                     str(config)], stdout=sink, stderr=subprocess.STDOUT,
                                    cwd=ROOT)
        try:
            url = None
            deadline = time.monotonic() + 60
            while url is None and time.monotonic() < deadline:
                for line in log.read_text().splitlines():
                    if '"http_listening"' in line:
                        url = json.loads(line)["url"]
                time.sleep(0.1)
            assert url, log.read_text()
            results: dict[str, dict[str, float]] = {}
            with httpx.Client(base_url=url, timeout=30) as client:
                for path in ("/", "/jobs", "/failures", "/metrics", "/healthz"):
                    client.get(path).raise_for_status()  # warm the page cache
                    times = []
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        client.get(path).raise_for_status()
                        times.append((time.perf_counter() - t0) * 1000)
                    times.sort()
                    results[path] = {"median_ms": round(statistics.median(times), 1),
                                     "p95_ms": round(times[int(len(times) * 0.95) - 1], 1)}
            time.sleep(2)
            before, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            idle = (cpu_seconds(proc.pid) - before) / (time.monotonic() - t0) * 100
            rss_kb = int(next(line.split()[1] for line in
                              Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS")))
        finally:
            proc.terminate()
            proc.wait(30)
    rows = [(f"overview (/) median, {args.jobs} jobs", f"{results['/']['median_ms']} ms",
             "< 200 ms"),
            ("overview (/) p95", f"{results['/']['p95_ms']} ms", "< 200 ms"),
            ("recent jobs (/jobs) median", f"{results['/jobs']['median_ms']} ms", ""),
            ("failures (/failures) median", f"{results['/failures']['median_ms']} ms", ""),
            ("/metrics median", f"{results['/metrics']['median_ms']} ms", ""),
            ("/healthz median", f"{results['/healthz']['median_ms']} ms", ""),
            (f"idle CPU, page on, {len(FOLDERS)} folders", f"{idle:.2f} % of a core",
             "< 0.5 %"),
            ("idle CPU, page off (same daemon)", f"{idle_off:.2f} % of a core", ""),
            ("RSS, page on", f"{rss_kb / 1024:.0f} MB", "")]
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'number':>18}  goal")
    for what, number, goal in rows:
        print(f"{what:<{width}}  {number:>18}  {goal}")
    print(f"(journal filled in {fill_seconds:.1f} s)")
    data = {"jobs": args.jobs, "pages": results, "idle_cpu_percent": round(idle, 3),
            "idle_cpu_percent_page_off": round(idle_off, 3),
            "rss_mb": round(rss_kb / 1024, 1), "machine_cpus": os.cpu_count()}
    if args.out:
        args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
