"""How crystal-watchd rides out an outage of fal (or of the studio's connection).

    python bench/outage.py [--files 10] [--outage 150] [--mode refused|503] [--out FILE]

Ten files wait at the fake fal (two already running there) when it goes away for 150 s:
every new connection refused, or every endpoint answering 503. With the default ``retry:``
settings. Reports the requests the fake saw while away (refused connections counted) and
per minute, the probes, how many files failed (goal 0), how many times each input was billed
(goal: once each), and how long after the first good probe the outputs landed (goal: a few
seconds). Goal for the load: fewer than 30 requests a minute in total.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from fakefal import FakeFal  # noqa: E402
from run import KEY, ROOT, Env, daemon, jpeg, ts, write_config  # noqa: E402


def one_run(env: Env, work: Path, args: argparse.Namespace) -> dict:
    server = FakeFal(key=KEY, latency=args.latency, runners=2, seed=3,
                     certfile=str(env.cert), keyfile=str(env.key)).start()
    inbox, outbox = work / "in", work / "out"
    try:
        config = write_config(work / "config.yaml",
                              [{"inbox": str(inbox), "outbox": str(outbox), "settle": 0.2}],
                              concurrency=2)
        d = daemon(env, server, config, work / "daemon.log")
        d.wait_event("daemon_ready")
        inbox.mkdir(parents=True, exist_ok=True)
        names = [f"o{i:03d}" for i in range(args.files)]
        for i, name in enumerate(names):
            (inbox / f"{name}.jpg").write_bytes(jpeg((32, 24), 9000 + i))
        d.wait_event("fal_request_submitted", 2, timeout=120)
        server.outage.begin(args.mode)
        time.sleep(args.outage)
        server.outage.end()
        back = d.wait_event("fal_reachable_again", timeout=180)[0]
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 120 + args.files * args.latency
        while len(seen) < len(names) and time.monotonic() < deadline:
            for name in names:
                if name not in seen and (outbox / f"{name}_x2.jpg").exists():
                    seen[name] = time.time()
            time.sleep(0.02)
        failed = len(d.events("job_failed"))
        retries = len(d.events("job_retry_scheduled"))
        d.stop()
        server.settle_runs()
        during = server.outage.during()
        away = server.outage.ended - server.outage.began
        first_good = ts(back)
        # what ran at fal before it went away finished there; the rest ran after it was back
        after = sorted(t - first_good for t in seen.values())
        billed = server.billed_per_input()
        return {"mode": args.mode, "files": args.files, "outage_s": round(away, 1),
                "requests_while_away": len(during),
                "requests_per_minute": round(len(during) / max(away / 60, 1e-9), 1),
                "refused_connections": sum(1 for w in during if w == "refused"),
                "outputs": len(seen), "failed": failed, "retries_scheduled": retries,
                "billed_once": sum(1 for n in billed.values() if n == 1),
                "billed_more_than_once": sum(1 for n in billed.values() if n > 1),
                "first_output_after_good_probe_s": round(after[0], 2) if after else None,
                "last_output_after_good_probe_s": round(after[-1], 2) if after else None,
                "outage_logged_as_s": back.get("lasted")}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--outage", type=float, default=150.0)
    parser.add_argument("--mode", choices=("refused", "503"), default="refused")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-outage-") as tmp:
        base = Path(tmp)
        result = one_run(Env(base), base, args)
    print(f"{args.files} files, fal away {result['outage_s']} s ({args.mode}); goals: < 30 "
          "requests a minute, 0 failed, each billed once, outputs a few s after fal is back")
    for key, value in result.items():
        print(f"  {key:<34} {value}")
    if args.out:
        args.out.write_text(json.dumps({"root": str(ROOT), "args": vars(args) | {"out": None},
                                        "result": result}, indent=2) + "\n")
    return 0 if result["failed"] == 0 and result["billed_more_than_once"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
