"""Benchmark crystal-watchd against the physical limit and a do-it-yourself peer.

    python bench/run.py [--files 200] [--concurrency 8] [--latency 1.0] [--settle 0.5]
                        [--idle-seconds 60] [--backlog 10000] [--done 100000] [--out FILE]

Uses the fake fal server from tests/ (fixed latency, as many runners as the concurrency) on
loopback, prints a table with each goal beside its number, and writes the numbers as JSON.
Parts: throughput (efficiency = (N·L/C) / wall) with ``concurrency`` as a hard cap
(``fal.queue_ahead: 0``, the default) and with ``queue_ahead: C``, the peer side by side,
drop→submit and drop→output latency, idle CPU and RSS with 10 watched folders (native and
polling), backlog journaling and restart over many done files, CPU per job for a 12 MP
JPEG upscaled ×2 with JPEG out (fal's JPEG kept as the output, its metadata spliced in), and
resources per job against the peer (bench/resources.py; ``--no-resources`` skips it). The
table's ``setting`` column says which backend and settings each row used. The peer is given
the same work as the daemon (the same output_format asked of fal, the same upload mode);
the fake's own record of both sides' requests is checked and kept in the results.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import trustme  # noqa: E402
import yaml  # noqa: E402
from fakefal import FakeFal  # noqa: E402
from PIL import Image  # noqa: E402

KEY = "bench-key-id:bench-key-secret"
# The fake server answers from many threads; a short GIL switch interval keeps its own
# answer latency well below what is being measured.
sys.setswitchinterval(0.0005)
TICKS = os.sysconf("SC_CLK_TCK")


class Env:
    def __init__(self, base: Path):
        self.base = base
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.ca, self.cert, self.key = base / "ca.pem", base / "cert.pem", base / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        cert.private_key_pem.write_to_path(str(self.key))
        self.cert.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))

    def fake(self, latency: float, runners: int) -> FakeFal:
        return FakeFal(key=KEY, latency=latency, runners=runners, certfile=str(self.cert),
                       keyfile=str(self.key)).start()

    def environ(self, server: FakeFal) -> dict[str, str]:
        return {**os.environ, "FAL_RUN_HOST": server.host, "FAL_QUEUE_RUN_HOST": server.host,
                "SSL_CERT_FILE": str(self.ca), "FAKEFAL_BASE_URL": server.base_url,
                "FAL_PLATFORM_URL": server.base_url + "/v1", "FAL_KEY": KEY}


class Proc:
    """A daemon (or peer) subprocess with its log and /proc accounting."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        with open(log, "w") as out:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        # The log is read on from where the last look stopped: parsing it whole at every
        # look would make the benchmark compete for the CPU it measures (10,000 lines).
        self._seen: list[dict[str, Any]] = []
        self._offset = 0

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with open(self.log, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self._offset += len(whole)
        for line in whole.decode(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._seen.append(event)
        return [e for e in self._seen if name is None or e.get("event") == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = 600) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{count}× {name}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self, peak: bool = False) -> float:
        key = "VmHWM:" if peak else "VmRSS:"
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def daemon(env: Env, server: FakeFal | None, config: Path, log: Path) -> Proc:
    if server is None:
        return Proc(["-m", "crystal_watchd", "run", "--config", str(config)], dict(os.environ),
                    log)
    return Proc([str(ROOT / "tests/fakefal/bootstrap.py"), "run", "--config", str(config)],
                env.environ(server), log)


def write_config(path: Path, folders: list[dict], **top: Any) -> Path:
    data = {"backend": "fal", "state_dir": str(path.parent / "state"),
            "log": {"format": "json", "level": "info"},
            "http": {"listen": "127.0.0.1:0"},  # the page is on, as by default; any free port
            **top, "folders": folders}
    path.write_text(yaml.safe_dump(data))
    return path


def jpeg(size: tuple[int, int], seed: int) -> bytes:
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 11) % 256, 90))
    image.putpixel((0, 0), (seed % 256, seed // 256 % 256, 1))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def ts(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def count_files(folder: Path) -> int:
    try:
        return sum(1 for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        return 0


# -- parts --------------------------------------------------------------------------------

def _work_seen(server: FakeFal, since: int, uploads_before: int) -> dict:
    """What fal was asked to do since submission ``since``: formats and uploads."""
    asked = sorted({s["output_format"] or "(default)" for s in server.submissions[since:]})
    return {"output_format": asked, "uploads": server.calls["upload"] - uploads_before}


def throughput(env: Env, work: Path, n: int, c: int, latency: float, settle: float,
               queue_ahead: int = 0, peer: bool = True) -> dict:
    """``n`` files through the daemon, and (``peer``) through the peer, against a fake with
    exactly ``c`` runners: the account's own limit equals ``concurrency``."""
    server = env.fake(latency, runners=c)
    tp = work / f"tp-ahead{queue_ahead}"
    try:
        files = [jpeg((64, 48), i) for i in range(n)]
        config = write_config(tp.with_suffix(".yaml"), [{"inbox": str(tp / "in"),
                                                         "outbox": str(tp / "out"),
                                                         "settle": settle}], concurrency=c,
                              fal={"queue_ahead": queue_ahead}, state_dir=str(tp / "state"))
        d = daemon(env, server, config, tp.with_suffix(".log"))
        d.wait_event("daemon_ready")
        start = time.time()
        for i, data in enumerate(files):
            (tp / "in" / f"f{i:04d}.jpg").write_bytes(data)
        while count_files(tp / "out") < n:
            time.sleep(0.02)
        ours = time.time() - start
        daemon_cpu = d.cpu_seconds()
        phases = {name: round(ts(d.events(name)[0]) - start, 3) for name in
                  ("file_queued", "fal_request_submitted")}
        phases["last_submit"] = round(ts(d.events("fal_request_submitted")[-1]) - start, 3)
        phases["last_done"] = round(ts(d.events("job_done")[-1]) - start, 3)
        d.stop()
        ours_work = _work_seen(server, 0, 0)
        ideal = n * latency / c
        result = {"files": n, "concurrency": c, "queue_ahead": queue_ahead, "runners": c,
                  "latency": latency, "settle": settle, "ideal_s": round(ideal, 2),
                  "wall_s": round(ours, 2), "daemon_cpu_s": round(daemon_cpu, 2),
                  "timeline_s": phases, "efficiency": round(ideal / ours, 3),
                  "peak_at_fal": server.peak_open}
        if not peer:
            return result

        since, uploads_before = len(server.submissions), server.calls["upload"]
        (work / "peer/in").mkdir(parents=True)
        # The same work as the daemon's folder: JPEG in, fal asked for JPEG (output_format
        # "same" keeps fal's JPEG), every input uploaded (fal.upload: auto).
        peer = Proc([str(ROOT / "bench/peer.py"), str(work / "peer/in"), str(work / "peer/out"),
                     str(c), "2", "jpg", "auto"], env.environ(server), work / "peer.log")
        while "peer_ready" not in peer.log.read_text():
            time.sleep(0.05)
        start = time.time()
        for i, data in enumerate(files):
            (work / "peer/in" / f"f{i:04d}.jpg").write_bytes(data)
        deadline = time.time() + 600
        while count_files(work / "peer/out") < n and time.time() < deadline:
            time.sleep(0.02)
        theirs = time.time() - start
        peer.proc.kill()
        peer_work = _work_seen(server, since, uploads_before)
        if peer_work != ours_work:
            raise RuntimeError(f"the peer did other work than the daemon: {peer_work} against "
                               f"{ours_work}")
        return {**result, "peer_wall_s": round(theirs, 2), "same_work": ours_work,
                "ours_over_peer": round(ours / theirs, 3)}
    finally:
        server.stop()


def latency_part(env: Env, work: Path, latency: float, settle: float, samples: int) -> dict:
    server = env.fake(latency, runners=2)
    try:
        config = write_config(work / "lat.yaml", [{"inbox": str(work / "lat/in"),
                                                   "outbox": str(work / "lat/out"),
                                                   "settle": settle}], concurrency=2)
        d = daemon(env, server, config, work / "lat.log")
        d.wait_event("daemon_ready")
        to_submit, to_output = [], []
        for i in range(samples):
            data = jpeg((64, 48), 1000 + i)
            path = work / "lat/in" / f"l{i:03d}.jpg"
            with open(path, "wb") as fh:
                fh.write(data)
            closed = time.time()
            submitted = d.wait_event("fal_request_submitted", i + 1)[-1]
            out = work / "lat/out" / f"l{i:03d}_x2.jpg"
            while not out.exists():
                time.sleep(0.005)
            to_output.append(time.time() - closed)
            to_submit.append(ts(submitted) - closed)
            time.sleep(0.2)
        d.stop()

        def pct(values: list[float], q: float) -> float:
            return round(statistics.quantiles(values, n=100)[q - 1], 3) if len(values) > 1 \
                else round(values[0], 3)

        return {"samples": samples, "settle": settle, "latency": latency,
                "submit_p50_s": pct(to_submit, 50), "submit_p95_s": pct(to_submit, 95),
                "output_p50_s": pct(to_output, 50), "output_p95_s": pct(to_output, 95)}
    finally:
        server.stop()


def idle(env: Env, work: Path, seconds: float) -> dict:
    out = {}
    for mode in ("native", "polling"):
        folders = [{"inbox": str(work / f"idle-{mode}/in{i}"),
                    "outbox": str(work / f"idle-{mode}/out{i}"),
                    "polling": mode == "polling"} for i in range(10)]
        config = write_config(work / f"idle-{mode}.yaml", folders, backend="local",
                              state_dir=str(work / f"idle-{mode}/state"))
        d = daemon(env, None, config, work / f"idle-{mode}.log")
        d.wait_event("daemon_ready")
        time.sleep(2)
        cpu0 = d.cpu_seconds()
        time.sleep(seconds)
        cpu = d.cpu_seconds() - cpu0
        out[mode] = {"cpu_percent": round(100 * cpu / seconds, 3), "rss_mb": round(d.rss_mb(), 1),
                     "peak_rss_mb": round(d.rss_mb(peak=True), 1)}
        d.stop()
    return out


def backlog(env: Env, work: Path, queued: int, done: int) -> dict:
    from crystal_watchd.journal import SqliteJournal

    # 1. journal a backlog: budget 0 means nothing is submitted, everything is journaled
    inbox = work / "bl/in"
    inbox.mkdir(parents=True)
    for i in range(queued):
        (inbox / f"q{i:05d}.jpg").write_bytes(jpeg((8, 8), i))
    server = env.fake(0.1, runners=2)
    config = write_config(work / "bl.yaml", [{"inbox": str(inbox), "outbox": str(work / "bl/out"),
                                              "settle": 0.5}], budget={"daily_usd": 0},
                          state_dir=str(work / "bl/state"))
    start = time.time()
    d = daemon(env, server, config, work / "bl.log")
    d.wait_event("file_queued", queued, timeout=900)
    journal_s = time.time() - start
    rss = d.rss_mb(peak=True)
    d.stop()
    server.stop()

    # 2. restart over many done files (originals kept)
    inbox = work / "done/in"
    inbox.mkdir(parents=True)
    journal = SqliteJournal(work / "done/state/journal.sqlite3")
    data = jpeg((4, 4), 1)
    rows = []
    for i in range(done):
        path = inbox / f"d{i:06d}.jpg"
        path.write_bytes(data)
        st = path.stat()
        rows.append((path, st))
    with journal.db:
        for i, (path, st) in enumerate(rows):
            journal.db.execute(
                "INSERT INTO jobs (folder, path, rel, size, mtime_ns, sha256, state, created_at, "
                "updated_at) VALUES ('in', ?, ?, ?, ?, ?, 'done', 0, 0)",
                (os.fsencode(path), os.fsencode(path.name), st.st_size, st.st_mtime_ns, f"h{i}"))
    journal.close()
    server = env.fake(0.1, runners=2)
    config = write_config(work / "done.yaml", [{"inbox": str(inbox),
                                                "outbox": str(work / "done/out")}],
                          state_dir=str(work / "done/state"))
    start = time.time()
    d = daemon(env, server, config, work / "done.log")
    scanned = d.wait_event("folder_scanned", timeout=300)[0]
    restart_s = time.time() - start
    time.sleep(1.5)
    submissions = len(server.submissions)
    queued_again = len(d.events("file_queued"))
    d.stop()
    server.stop()
    return {"queued_files": queued, "journal_s": round(journal_s, 2),
            "peak_rss_mb_backlog": round(rss, 1), "done_files": done,
            "restart_s": round(restart_s, 2), "restart_new": scanned["new"],
            "restart_queued": queued_again, "restart_submissions": submissions}


def per_file(env: Env, work: Path, jobs: int) -> dict:
    server = env.fake(0.0, runners=4)
    try:
        config = write_config(work / "pf.yaml", [{"inbox": str(work / "pf/in"),
                                                  "outbox": str(work / "pf/out"),
                                                  "settle": 0.3, "output_format": "jpeg"}],
                              concurrency=1)
        d = daemon(env, server, config, work / "pf.log")
        d.wait_event("daemon_ready")
        time.sleep(1)
        cpu0 = d.cpu_seconds()
        start = time.time()
        for i in range(jobs):
            image = Image.frombytes("RGB", (4000, 3000), os.urandom(4000 * 3000 * 3 // 64) * 64)
            image.save(work / "pf/in" / f"big{i}.jpg", quality=90)
            d.wait_event("job_done", i + 1, timeout=600)
        wall = time.time() - start
        cpu = d.cpu_seconds() - cpu0
        asked = sorted({s["output_format"] for s in server.submissions})
        return {"jobs": jobs, "input": "4000x3000 JPEG q90 (noise)", "fal_asked_for": asked,
                "output": "8000x6000 JPEG: fal's JPEG kept, metadata spliced in (no re-encode)",
                "cpu_ms_per_job": round(1000 * cpu / jobs), "wall_s_per_job": round(wall / jobs, 2),
                "peak_rss_mb": round(d.rss_mb(peak=True), 1)}
    finally:
        d.stop()
        server.stop()


def several_daemons(env: Env, work: Path, args: argparse.Namespace) -> dict:
    """1, 2 and 3 daemons on one PostgreSQL journal (bench/several.py)."""
    if not args.several_files:
        return {"skipped": "--several-files 0"}
    sys.path.insert(0, str(ROOT / "bench"))
    import several
    from pgcluster import Unavailable

    try:
        return several.run(env, work, args.several_files, args.concurrency, args.latency,
                           (640, 480))
    except Unavailable as exc:
        return {"skipped": str(exc)}


def report(results: dict, args: argparse.Namespace) -> str:
    t, ta, lat, idle_, bl, pf = (results["throughput"], results["throughput_ahead"],
                                 results["latency"], results["idle"], results["backlog"],
                                 results["per_file"])

    def fal_setting(r: dict) -> str:
        return f"fal C={r['concurrency']} queue_ahead={r['queue_ahead']}"

    rows = [
        ("efficiency (N·L/C ÷ wall)", f"{t['efficiency']:.3f}  ({t['wall_s']} s vs ideal "
         f"{t['ideal_s']} s, peak {t['peak_at_fal']} at fal)", "peak ≤ C (hard cap)",
         t["peak_at_fal"] <= t["concurrency"], fal_setting(t)),
        ("efficiency (N·L/C ÷ wall)", f"{ta['efficiency']:.3f}  ({ta['wall_s']} s vs ideal "
         f"{ta['ideal_s']} s, peak {ta['peak_at_fal']} at fal)", "≥ 0.95",
         ta["efficiency"] >= 0.95, fal_setting(ta)),
        ("ours ÷ peer wall time, same work", f"{t['ours_over_peer']:.3f}  (peer "
         f"{t['peer_wall_s']} s; both: JPEG out, inputs uploaded)", "≤ 1× peer",
         t["ours_over_peer"] <= 1, fal_setting(t)),
        ("drop→submit p50 / p95", f"{lat['submit_p50_s']} / {lat['submit_p95_s']} s",
         f"p95 ≤ settle + 0.3 = {lat['settle'] + 0.3:g} s",
         lat["submit_p95_s"] <= lat["settle"] + 0.3, "fal C=2 queue_ahead=0"),
        ("drop→output p50 / p95", f"{lat['output_p50_s']} / {lat['output_p95_s']} s",
         f"(latency {lat['latency']:g} s)", True, "fal C=2 queue_ahead=0"),
        ("idle CPU native / polling", f"{idle_['native']['cpu_percent']} / "
         f"{idle_['polling']['cpu_percent']} % of a core", "< 0.5 %",
         max(idle_["native"]["cpu_percent"], idle_["polling"]["cpu_percent"]) < 0.5,
         "local, 10 folders"),
        ("idle RSS native / polling", f"{idle_['native']['rss_mb']} / "
         f"{idle_['polling']['rss_mb']} MB", "< 100 MB",
         max(idle_["native"]["rss_mb"], idle_["polling"]["rss_mb"]) < 100, "local, 10 folders"),
        (f"journal {bl['queued_files']} queued files", f"{bl['journal_s']} s, peak RSS "
         f"{bl['peak_rss_mb_backlog']} MB", "< 15 s, RSS < 150 MB",
         bl["journal_s"] < 15 and bl["peak_rss_mb_backlog"] < 150,
         "fal, daily_usd 0"),
        (f"restart over {bl['done_files']} done files", f"{bl['restart_s']} s, "
         f"{bl['restart_submissions']} submissions", "< 5 s, 0 submissions",
         bl["restart_s"] < 5 and bl["restart_submissions"] == 0, "fal C=4 queue_ahead=0"),
        ("CPU per 12 MP JPEG job, ×2", f"{pf['cpu_ms_per_job']} ms "
         f"(wall {pf['wall_s_per_job']} s, peak RSS {pf['peak_rss_mb']} MB)", "(measured)", True,
         "fal C=1, JPEG out: fal's JPEG kept"),
    ]
    if "resources" in results:
        import resources

        rows += [(*row, "fal C=8 queue_ahead=0") for row in resources.rows(results["resources"])]
    width = max(len(r[0]) for r in rows)
    setting = max(len(r[4]) for r in rows)
    lines = [f"crystal-watchd benchmark — N={t['files']} C={t['concurrency']} "
             f"L={t['latency']}s settle={t['settle']}s, {os.cpu_count()} cores",
             f"{'measure':<{width}}  {'setting':<{setting}}  {'result':<56} {'goal':<26} ok"]
    for name, value, goal, ok, used in rows:
        lines.append(f"{name:<{width}}  {used:<{setting}}  {value:<56} {goal:<26} "
                     f"{'yes' if ok else 'NO'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--done", type=int, default=100_000)
    parser.add_argument("--big-jobs", type=int, default=3)
    parser.add_argument("--no-resources", action="store_true",
                        help="skip the resources-per-job part (bench/resources.py)")
    parser.add_argument("--several-files", type=int, default=300,
                        help="files for the several-daemons row (0 skips it)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crystal-watchd-bench-"))
    env = Env(work)
    try:
        results = {
            "throughput": throughput(env, work, args.files, args.concurrency, args.latency,
                                     args.settle),
            "throughput_ahead": throughput(env, work, args.files, args.concurrency,
                                           args.latency, args.settle,
                                           queue_ahead=args.concurrency, peer=False),
            "latency": latency_part(env, work, args.latency, args.settle, args.samples),
            "idle": idle(env, work, args.idle_seconds),
            "backlog": backlog(env, work, args.backlog, args.done),
            "per_file": per_file(env, work, args.big_jobs),
        }
        if not args.no_resources:
            import resources

            results["resources"] = resources.measure(env, work)
        results["several"] = several_daemons(env, work, args)
        results["run"] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "cores": os.cpu_count(), "args": {k: str(v) for k, v in
                                                            vars(args).items()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results, args))
    if results["several"].get("throughput"):
        import several

        print(several.report(results["several"]))
    else:
        print(f"several daemons: skipped ({results['several'].get('skipped')})")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"numbers written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
