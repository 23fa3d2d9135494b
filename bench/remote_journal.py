"""A shared journal on another machine: two daemons on one PostgreSQL journal reached through
a TCP proxy that delays every byte (15 ms each way, as between two studio sites over a VPN;
2 ms, as over a studio's Wi-Fi).

    python bench/remote_journal.py [--files 96] [--concurrency 8] [--latency 1.0]
                                   [--delays 0.015,0.002] [--out FILE]

Each row: wall time for ``--files`` small pictures against the ideal N·L/C (goal: within
1.5 ×), the worst ``/healthz`` answer of either daemon's page while they work (asked every
0.1 s; goal: under 1 s), and journal round trips per job: requests that crossed the proxy
towards the database from the first picture to the last output, the page's own probes left
out (so heartbeats and the dispatch loop's looks at the queue are included). Daemons, fal
and machinery are bench/several.py's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from delayproxy import DelayProxy  # noqa: E402
from pgcluster import Cluster  # noqa: E402

DAEMONS = 2
PROBE_EVERY = 0.1


class ProxyProcess:
    """The delaying proxy in a process of its own: in this one the fake fal's threads would
    hold it up (the GIL), and the delay would grow with fal's load."""

    def __init__(self, port: int, delay: float):
        self._requests = multiprocessing.Value("q", 0)
        parent, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(target=self._serve, daemon=True,
                                             args=(port, delay, self._requests, child))
        self._proc.start()
        self.port = parent.recv()
        self.target = ("127.0.0.1", port)

    @staticmethod
    def _serve(port: int, delay: float, requests, pipe) -> None:
        proxy = DelayProxy("127.0.0.1", port, delay)
        pipe.send(proxy.port)
        while True:
            requests.value = proxy.requests
            time.sleep(0.02)

    @property
    def requests(self) -> int:
        time.sleep(0.05)  # the child publishes its count every 20 ms
        return self._requests.value

    url = DelayProxy.url

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(5)


class Prober:
    """Asks each page's /healthz every PROBE_EVERY seconds; keeps the worst answer time."""

    def __init__(self, urls: list[str]):
        self.urls, self.worst, self.probes = urls, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                for url in self.urls:
                    started = time.monotonic()
                    client.get(url + "/healthz")
                    self.worst = max(self.worst, time.monotonic() - started)
                    self.probes += 1
                self._stop.wait(PROBE_EVERY)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def remote_row(env, work: Path, cluster: Cluster, delay: float, files: int, concurrency: int,
               latency: float) -> dict:
    from run import count_files, daemon, jpeg, write_config

    proxy = ProxyProcess(cluster.port, delay)
    server = env.fake(latency, runners=4 * concurrency)
    url = proxy.url(cluster.new_database())
    base = work / f"remote-{delay * 1000:g}ms"
    inbox, outbox = base / "in", base / "out"
    inbox.mkdir(parents=True)  # a share the daemons are given is there before they start
    procs = []
    try:
        for i in range(DAEMONS):
            (base / f"d{i}").mkdir(parents=True)
            config = write_config(base / f"d{i}" / "config.yaml",
                                  [{"name": "shared", "inbox": str(inbox), "outbox": str(outbox),
                                    "settle": 0.3}], concurrency=concurrency, journal=url,
                                  journal_lease=10)
            procs.append(daemon(env, server, config, base / f"d{i}.log"))
        pages = [p.wait_event("http_listening")[0]["url"].rstrip("/") for p in procs]
        for proc in procs:
            proc.wait_event("daemon_ready")
        data = [jpeg((64, 48), i) for i in range(files)]
        prober = Prober(pages)
        time.sleep(1.0)  # the page's own journal connection is open before counting starts
        requests_before, probes_before = proxy.requests, prober.probes
        start = time.time()
        for i, blob in enumerate(data):
            tmp = inbox / f".f{i:04d}.jpg"
            tmp.write_bytes(blob)
            tmp.rename(inbox / f"f{i:04d}.jpg")
        while count_files(outbox) < files:
            time.sleep(0.05)
        wall = time.time() - start
        prober.stop()
        # Each /healthz probe sends the page's one statement through the proxy.
        requests = proxy.requests - requests_before - (prober.probes - probes_before)
        ideal = files * latency / concurrency
        billed = server.billed_per_input()
        return {"delay_ms": delay * 1000, "daemons": DAEMONS, "files": files,
                "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
                "times_ideal": round(wall / ideal, 2), "healthz_worst_s": round(prober.worst, 3),
                "round_trips_per_job": round(requests / files, 1),
                "billed_twice": sum(v > 1 for v in billed.values()),
                "per_daemon_jobs": [len(p.events("job_done")) for p in procs]}
    finally:
        for proc in procs:
            proc.stop()
        server.stop()
        proxy.close()


def run(env, work: Path, files: int, concurrency: int, latency: float,
        delays: tuple[float, ...]) -> dict:
    cluster = Cluster()
    try:
        rows = [remote_row(env, work, cluster, d, files, concurrency, latency) for d in delays]
        return {"concurrency": concurrency, "latency": latency, "rows": rows}
    finally:
        cluster.stop()


def report(result: dict) -> str:
    lines = [f"{DAEMONS} daemons, PostgreSQL journal behind a delaying proxy — "
             f"C={result['concurrency']} L={result['latency']}s"]
    for r in result["rows"]:
        lines.append(
            f"  {r['delay_ms']:g} ms each way: {r['files']} files in {r['wall_s']} s "
            f"({r['times_ideal']} × the ideal {r['ideal_s']} s; goal ≤ 1.5), /healthz worst "
            f"{r['healthz_worst_s']} s (goal < 1), {r['round_trips_per_job']} round trips per "
            f"job, billed twice {r['billed_twice']}, jobs per daemon {r['per_daemon_jobs']}")
    return "\n".join(lines)


def main() -> int:
    from run import Env

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--delays", default="0.015,0.002")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    delays = tuple(float(v) for v in args.delays.split(","))
    work = Path(tempfile.mkdtemp(prefix="crystal-watchd-remote-"))
    result = run(Env(work), work, args.files, args.concurrency, args.latency, delays)
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
