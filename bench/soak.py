"""Soak test: SIGKILL the daemon at random moments, over many trials, and count what broke.

    python bench/soak.py [--trials 20] [--files 6] [--seed 1]

Each trial drops files into a fresh inbox, runs the daemon against the fake fal server (the
one the tests use), kills it with SIGKILL one to three times at random moments, then lets a
last run finish. It prints, per trial and in total: files lost (no output), files with more
than one output, visible partial files, and files fal billed more than once. Lost,
duplicated, partial and billed twice must be 0; the exit status is 1 otherwise.

A kill between fal accepting a submission and the journal recording its request id no
longer costs a second run: the restart finds the request in fal's request list (the fake's
platform API) and adopts it. A submission killed before fal took it is sent again only once
``fal.timeout`` (10 s here) has passed since it was sent. "billed twice" must stay 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import trustme  # noqa: E402
import yaml  # noqa: E402
from fakefal import FakeFal  # noqa: E402
from PIL import Image  # noqa: E402

KEY = "soak-key-id:soak-key-secret"


def tls(folder: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    return {k: str(v) for k, v in files.items()}


def start(config: Path, server: FakeFal, certs: dict[str, str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "FAL_RUN_HOST": server.host, "FAL_QUEUE_RUN_HOST": server.host,
           "SSL_CERT_FILE": certs["ca"], "FAKEFAL_BASE_URL": server.base_url,
           "FAL_PLATFORM_URL": server.base_url + "/v1", "FAL_KEY": KEY}
    return subprocess.Popen([sys.executable, str(ROOT / "tests/fakefal/bootstrap.py"), "run",
                             "--config", str(config)], env=env, stdout=open(log, "a"),
                            stderr=subprocess.STDOUT)


def done_count(log: Path) -> int:
    n = 0
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            n += json.loads(line).get("event") == "job_done"
    return n


def trial(rng: random.Random, files: int, certs: dict[str, str], work: Path) -> dict[str, int]:
    server = FakeFal(key=KEY, latency=rng.uniform(0.2, 1.0), runners=2, seed=rng.randrange(1 << 30),
                     certfile=certs["cert"], keyfile=certs["key"]).start()
    server.faults.slow["download"] = rng.choice([0.0, 0.3])
    try:
        (work / "in").mkdir(parents=True)
        for i in range(files):
            Image.new("RGB", (40 + i, 30), (i * 30 % 256, 80, 160)).save(work / f"in/s{i}.png")
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "backend": "fal", "concurrency": 3, "state_dir": str(work / "state"),
            "fal": {"timeout": 10},
            "log": {"format": "json"}, "retry": {"attempts": 10, "backoff": 0.2,
                                                 "max_backoff": 1},
            "folders": [{"inbox": str(work / "in"), "outbox": str(work / "out"),
                         "settle": 0.2}]}))
        log = work / "daemon.log"
        partial = 0
        for _ in range(rng.randint(1, 3)):
            proc = start(config, server, certs, log)
            time.sleep(rng.uniform(0.3, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            out = work / "out"
            partial += sum(1 for p in out.glob("*") if not p.name.startswith(".")
                           and not _decodes(p)) if out.exists() else 0
        proc = start(config, server, certs, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            outputs = list((work / "out").glob("*.png")) if (work / "out").exists() else []
            if len(outputs) >= files:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        outputs = sorted(p.name for p in (work / "out").glob("*") if not p.name.startswith("."))
        per_input = {f"s{i}": sum(1 for o in outputs if o.split("_x")[0] == f"s{i}")
                     for i in range(files)}
        billed = server.billed_per_input()
        return {"lost": sum(1 for v in per_input.values() if v == 0),
                "duplicated": sum(1 for v in per_input.values() if v > 1),
                "partial": partial,
                "billed_twice": sum(1 for v in billed.values() if v > 1),
                "submissions": len(server.submissions)}
    finally:
        server.stop()


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="crystal-watchd-soak-"))
    certs = tls(base)
    totals = {"lost": 0, "duplicated": 0, "partial": 0, "billed_twice": 0, "submissions": 0}
    print(f"{'trial':>5} {'lost':>5} {'dup':>5} {'partial':>7} {'billed2x':>8} {'submits':>7}")
    try:
        for n in range(args.trials):
            result = trial(rng, args.files, certs, base / f"t{n}")
            for k, v in result.items():
                totals[k] += v
            print(f"{n:>5} {result['lost']:>5} {result['duplicated']:>5} {result['partial']:>7} "
                  f"{result['billed_twice']:>8} {result['submissions']:>7}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"total: lost={totals['lost']} duplicated={totals['duplicated']} "
          f"partial={totals['partial']} billed_twice={totals['billed_twice']} "
          f"files={args.trials * args.files} submissions={totals['submissions']}")
    return 1 if (totals["lost"] or totals["duplicated"] or totals["partial"]
                 or totals["billed_twice"]) else 0


if __name__ == "__main__":
    sys.exit(main())
