"""Several daemons on one PostgreSQL journal: throughput with 1, 2 and 3 daemons, and the
journal's own cost per job, SQLite against PostgreSQL.

    python bench/several.py [--files 300] [--concurrency 8] [--latency 0.5] [--size 640x480]

Every daemon is a real ``crystal-watchd run`` on the fake fal (fixed latency, plenty of
runners) with the same inbox and outbox; ``concurrency`` is global. Each job costs some local
CPU (decoding and encoding an image of ``--size``), so one daemon may be CPU-bound where
several are not, until the global concurrency is the limit: ideal = files · latency ÷ C.
A first row runs one daemon on the SQLite journal for comparison. PostgreSQL runs with its
own durable defaults (fsync, synchronous_commit, full_page_writes on), as a real shared
journal does; the journal cost per job is also measured with durability off (the tests'
setting), labelled as such. SQLite runs as the daemon sets it up (WAL, synchronous=NORMAL).
Needs PostgreSQL's server binaries (``apt-get install postgresql``). Also run by run.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from pgcluster import Cluster  # noqa: E402


def daemons_throughput(env, work: Path, cluster: Cluster | None, daemons: int, files: int,
                       concurrency: int, latency: float, size: tuple[int, int]) -> dict:
    """``daemons`` daemons on one PostgreSQL journal (or one on SQLite: ``cluster`` None)."""
    from run import count_files, daemon, jpeg, write_config

    server = env.fake(latency, runners=4 * concurrency)
    journal = {"journal": cluster.new_database(), "journal_lease": 10} if cluster else {}
    base = work / f"several{daemons}{'' if cluster else '-sqlite'}"
    inbox, outbox = base / "in", base / "out"
    inbox.mkdir(parents=True)  # a share the daemons are given is there before they start
    procs = []
    try:
        for i in range(daemons):
            (base / f"d{i}").mkdir(parents=True)
            config = write_config(base / f"d{i}" / "config.yaml",
                                  [{"name": "shared", "inbox": str(inbox), "outbox": str(outbox),
                                    "settle": 0.3}], concurrency=concurrency, **journal)
            procs.append(daemon(env, server, config, base / f"d{i}.log"))
        for proc in procs:
            proc.wait_event("daemon_ready")
        data = [jpeg(size, i) for i in range(files)]
        start = time.time()
        for i, blob in enumerate(data):
            tmp = inbox / f".f{i:04d}.jpg"
            tmp.write_bytes(blob)
            tmp.rename(inbox / f"f{i:04d}.jpg")
        while count_files(outbox) < files:
            time.sleep(0.05)
        wall = time.time() - start
        cpu = sum(p.cpu_seconds() for p in procs)
        billed = server.billed_per_input()
        ideal = files * latency / concurrency
        return {"daemons": daemons, "journal": "postgresql" if cluster else "sqlite",
                "files": files, "wall_s": round(wall, 2),
                "files_per_s": round(files / wall, 2), "ideal_s": round(ideal, 2),
                "efficiency": round(ideal / wall, 3), "daemon_cpu_s": round(cpu, 2),
                "peak_at_fal": server.peak_open,
                "billed_twice": sum(v > 1 for v in billed.values()),
                "per_daemon_jobs": [len(p.events("job_done")) for p in procs]}
    finally:
        for proc in procs:
            proc.stop()
        server.stop()


def journal_overhead(cluster: Cluster, fast: Cluster | None, work: Path, jobs: int) -> dict:
    """Milliseconds of journal work per job: every state change a fal job goes through.
    ``cluster`` is durable; ``fast`` (if given) has durability off, for comparison."""
    from crystal_watchd.journal import SqliteJournal
    from crystal_watchd.journal.postgres import PostgresJournal

    out = {}
    stores = [("sqlite", SqliteJournal(work / "overhead.sqlite3")),
              ("postgresql", PostgresJournal(cluster.new_database()))]
    if fast is not None:
        stores.append(("postgresql_fsync_off", PostgresJournal(fast.new_database())))
    for name, journal in stores:
        journal.register_daemon("bench", host="bench", pid=1, state_dir=str(work), folders={})
        start = time.perf_counter()
        for i in range(jobs):
            job = journal.enqueue("f", Path(f"/in/{i}.jpg"), f"{i}.jpg", 1000, i, f"h{i}")
            [job] = journal.claim_ready(time.time(), limit=1)
            job = journal.start(job, {"scale_factor": 2}, "k")
            journal.acquire_slot(job.id, 8)
            job = journal.submitted(job, f"req-{i}")
            journal.release_slot(job.id)
            job = journal.output_pending(job, [[f"/out/.t{i}", f"/out/{i}.jpg", f"/out/{i}.jpg"]])
            job = journal.output_written(job, [f"/out/{i}.jpg"], megapixels=1.0, cost_usd=0.016)
            journal.done(job)
        out[f"{name}_ms_per_job"] = round((time.perf_counter() - start) * 1000 / jobs, 3)
        journal.close()
    return out


def run(env, work: Path, files: int, concurrency: int, latency: float,
        size: tuple[int, int], counts: tuple[int, ...] = (1, 2, 3)) -> dict:
    cluster = Cluster(durable=True)
    fast = None
    try:
        rows = [daemons_throughput(env, work, None, 1, files, concurrency, latency, size)]
        rows += [daemons_throughput(env, work, cluster, n, files, concurrency, latency, size)
                 for n in counts]
        fast = Cluster(durable=False)
        return {"concurrency": concurrency, "latency": latency, "size": list(size),
                "postgresql": "durable (fsync, synchronous_commit, full_page_writes on)",
                "throughput": rows, "overhead": journal_overhead(cluster, fast, work, 300)}
    finally:
        cluster.stop()
        if fast is not None:
            fast.stop()


def report(result: dict) -> str:
    lines = [f"several daemons, one durable PostgreSQL journal — C={result['concurrency']} "
             f"(global) L={result['latency']}s, {result['size'][0]}x{result['size'][1]} JPEGs"]
    for row in result["throughput"]:
        lines.append(f"  {row['daemons']} daemon(s), {row['journal']:<10}: {row['files']} "
                     f"files in {row['wall_s']} s = {row['files_per_s']} files/s "
                     f"(ideal {row['ideal_s']} s, efficiency {row['efficiency']}), "
                     f"peak at fal {row['peak_at_fal']}, billed twice {row['billed_twice']}, "
                     f"jobs per daemon {row['per_daemon_jobs']}")
    o = result["overhead"]
    lines.append(f"  journal work per job: SQLite (WAL, synchronous=NORMAL) "
                 f"{o['sqlite_ms_per_job']} ms, PostgreSQL durable {o['postgresql_ms_per_job']} ms"
                 + (f", PostgreSQL with fsync off (the tests' setting) "
                    f"{o['postgresql_fsync_off_ms_per_job']} ms"
                    if "postgresql_fsync_off_ms_per_job" in o else ""))
    return "\n".join(lines)


def main() -> int:
    from run import Env

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="crystal-watchd-several-"))
    result = run(Env(work), work, args.files, args.concurrency, args.latency, size)
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
