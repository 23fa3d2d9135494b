"""How gently crystal-watchd waits for fal, and how soon it notices a finished request.

    python bench/waiting.py [--files 24] [--concurrency 4] [--latency 3.0] [--spread 0.5]
                            [--out FILE]

Against the fake fal with run times that vary ±``spread`` (seeded): with the status stream
working, with 30 % of streams cut after their first event (a flaky proxy: each cut stream is
opened again), and with every stream cut (after two reopenings, polling takes over).
Reports status calls per request (stream openings plus polls), status calls per second of
run, and the delay from fal finishing a request to its output appearing in the outbox
(p50/p90). Goals: at most about one status call per second of a run, p90 under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from fakefal import FakeFal, Faults  # noqa: E402
from run import KEY, ROOT, Env, daemon, jpeg, write_config  # noqa: E402


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(values[0], 3) if values else float("nan")
    return round(statistics.quantiles(values, n=100)[q - 1], 3)


def one_run(env: Env, work: Path, args: argparse.Namespace, cut: float) -> dict:
    server = FakeFal(key=KEY, latency=args.latency, latency_spread=args.spread,
                     runners=args.concurrency, seed=5, faults=Faults(cut_stream=cut),
                     certfile=str(env.cert), keyfile=str(env.key)).start()
    inbox, outbox = work / "in", work / "out"
    try:
        config = write_config(work / "config.yaml",
                              [{"inbox": str(inbox), "outbox": str(outbox), "settle": 0.2}],
                              concurrency=args.concurrency, http=None)
        d = daemon(env, server, config, work / "daemon.log")
        d.wait_event("daemon_ready")
        inbox.mkdir(parents=True, exist_ok=True)
        names = [f"w{i:03d}" for i in range(args.files)]
        for i, name in enumerate(names):
            (inbox / f"{name}.jpg").write_bytes(jpeg((32, 24), 7000 + i))
        seen: dict[str, float] = {}
        deadline = time.monotonic() + args.files * args.latency * 3 + 60
        while len(seen) < len(names) and time.monotonic() < deadline:
            for name in names:
                if name not in seen and (outbox / f"{name}_x2.jpg").exists():
                    seen[name] = time.time()
            time.sleep(0.005)
        d.stop()
        server.settle_runs()
        name_of_job = {e["job_id"]: Path(e["file"]).stem for e in d.events("job_started")}
        file_of = {e["request_id"]: name_of_job.get(e["job_id"])
                   for e in d.events("fal_request_submitted")}
        delays, run_seconds = [], 0.0
        for req in server.requests.values():
            name = file_of.get(req.id)
            if name in seen:
                fal_done = req.sent_wall + (req.end - req.submitted)
                delays.append(seen[name] - fal_done)
                run_seconds += req.end - req.start
        calls = server.calls["status"] + server.calls["stream"]
        mode = {0.0: "status stream", 1.0: "polling (stream cut)"}.get(
            cut, f"stream, {cut:.0%} cut")
        return {"mode": mode,
                "requests": len(server.requests), "outputs": len(seen),
                "status_calls": calls, "polls": server.calls["status"],
                "streams": server.calls["stream"],
                "calls_per_request": round(calls / max(1, len(server.requests)), 2),
                "calls_per_run_second": round(calls / max(run_seconds, 1e-9), 2),
                "done_to_output_p50_s": pct(delays, 50), "done_to_output_p90_s": pct(delays, 90)}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency", type=float, default=3.0)
    parser.add_argument("--spread", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="cw-wait-") as tmp:
        base = Path(tmp)
        env = Env(base)
        for cut in (0.0, 0.3, 1.0):
            work = base / f"cut{cut:g}"
            work.mkdir()
            results.append(one_run(env, work, args, cut))
    print(f"runs {args.latency:g} s ±{args.spread:.0%}, {args.files} files, "
          f"concurrency {args.concurrency} (goal: ≤ ~1 call per run second, p90 ≤ 0.5 s)")
    print(f"{'mode':<22} {'calls/request':>13} {'calls/run-s':>11} {'p50 s':>7} {'p90 s':>7}")
    for r in results:
        print(f"{r['mode']:<22} {r['calls_per_request']:>13} {r['calls_per_run_second']:>11} "
              f"{r['done_to_output_p50_s']:>7} {r['done_to_output_p90_s']:>7}")
    if args.out:
        args.out.write_text(json.dumps({"root": str(ROOT), "args": vars(args) | {"out": None},
                                        "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
