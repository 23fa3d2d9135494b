"""Resources per job, crystal-watchd against the do-it-yourself peer, in one run.

    python bench/resources.py [--files 8] [--concurrency 8] [--latency 1.0] [--burst 8]

CPU time and peak RSS come from the kernel (``os.wait4`` rusage of each process, after it
has stopped, reaped by the small bench/rusage.py so the benchmark's own size is not
counted), bytes downloaded from the fake fal's own count of result bytes served. Each
process's start-up and shutdown cost (measured in a run with no files) is subtracted from
its CPU, so the numbers are per job. fal is modelled as it is: a fixed run time and as many
runners as the concurrency, so neither side waits in fal's queue.

Scenarios: camera-like 6 MP JPEGs at ×2 with JPEG out, then PNG out (C jobs at once, N
files); a burst of 48 MP results finishing together, JPEG out and WebP out. Both sides do the
same work: fal is asked for the same format and inputs are sent the same way (these are
over 256 KiB, so both upload them). Goals are ratios to the peer (``PEER_RATIO_GOALS``).
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ROOT, Env, Proc, count_files, write_config  # noqa: E402


def camera_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A photo-like JPEG: gradients, hard edges and sensor-like noise (not flat colour)."""
    w, h = size
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base = np.stack([200 * x + 30 * y, 120 + 80 * np.sin(6 * x + 3 * y), 180 * y + 40 * x],
                    axis=2)
    base[h // 3: h // 2, w // 4: w // 2] = (240, 220, 60)  # an edge-bound object
    noisy = base + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(buffer, "JPEG",
                                                                           quality=92)
    return buffer.getvalue()


def _measured(args: list[str], env: dict[str, str], log: Path) -> Proc:
    """``python ARGS`` started through bench/rusage.py, which reports its rusage."""
    return Proc([str(HERE / "rusage.py"), str(log.with_suffix(".rusage.json")), sys.executable,
                 *args], env, log)


def _finish(proc: Proc) -> tuple[float, float]:
    """Stop the process; (CPU seconds, peak RSS MB) from the kernel (``os.wait4``)."""
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(timeout=120)
    usage = json.loads(proc.log.with_suffix(".rusage.json").read_text())
    return usage["cpu_s"], usage["peak_rss_mb"]


def _drop(inbox: Path, files: list[bytes]) -> None:
    """Write the files in place, as a camera or a copy does (the peer reacts to the close of
    the write, so no temp-then-rename)."""
    inbox.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(files):
        (inbox / f"f{i:03d}.jpg").write_bytes(data)


def _ours(env: Env, work: Path, name: str, files: list[bytes], c: int, latency: float,
          output_format: str) -> dict:
    server = env.fake(latency, runners=c)
    try:
        config = write_config(work / f"{name}.yaml", [{
            "inbox": str(work / name / "in"), "outbox": str(work / name / "out"),
            "settle": 0.3, "output_format": output_format}], concurrency=c)
        (work / name / "in").mkdir(parents=True, exist_ok=True)
        d = _measured([str(ROOT / "tests/fakefal/bootstrap.py"), "run", "--config", str(config)],
                      env.environ(server), work / f"{name}.log")
        d.wait_event("daemon_ready")
        _drop(work / name / "in", files)
        if files:
            d.wait_event("job_done", len(files), timeout=1800)
        cpu, rss = _finish(d)
        return {"cpu_s": cpu, "peak_rss_mb": rss, "bytes": server.bytes_served}
    finally:
        server.stop()


def _peer(env: Env, work: Path, name: str, files: list[bytes], c: int, latency: float,
          result_format: str) -> dict:
    server = env.fake(latency, runners=c)
    try:
        inbox, outbox = work / name / "in", work / name / "out"
        inbox.mkdir(parents=True, exist_ok=True)
        # fal.upload is left at auto for the daemon: the peer follows the same rule.
        peer = _measured([str(ROOT / "bench/peer.py"), str(inbox), str(outbox), str(c), "2",
                          result_format, "auto"], env.environ(server), work / f"{name}.log")
        while "peer_ready" not in peer.log.read_text():
            time.sleep(0.05)
        _drop(inbox, files)
        # The peer has no retries: a file whose call failed never arrives. Stop once all
        # arrived, or nothing new arrived for 30 s, and count what was lost.
        seen, last_change = 0, time.time()
        while seen < len(files) and time.time() - last_change < 30:
            time.sleep(0.1)
            now = count_files(outbox)
            if now != seen:
                seen, last_change = now, time.time()
        time.sleep(1.0)  # the last write_bytes() finishes
        cpu, rss = _finish(peer)
        return {"cpu_s": cpu, "peak_rss_mb": rss, "bytes": server.bytes_served,
                "lost": len(files) - seen}
    finally:
        server.stop()


def scenario(env: Env, work: Path, name: str, files: list[bytes], c: int, latency: float,
             output_format: str, with_peer: bool = True) -> dict:
    """Per-job CPU, bytes and peak RSS for us (and the peer), start-up cost subtracted."""
    result_format = "png" if output_format == "png" else "jpg"
    n = len(files)
    ours_idle = _ours(env, work, f"{name}-ours-idle", [], c, latency, output_format)
    ours = _ours(env, work, f"{name}-ours", files, c, latency, output_format)
    out = {"files": n, "output": output_format,
           "ours": {"cpu_s_per_job": round((ours["cpu_s"] - ours_idle["cpu_s"]) / n, 3),
                    "mb_down_per_job": round(ours["bytes"] / n / 1e6, 2),
                    "peak_rss_mb": round(ours["peak_rss_mb"], 1)}}
    if with_peer:
        peer_idle = _peer(env, work, f"{name}-peer-idle", [], c, latency, result_format)
        peer = _peer(env, work, f"{name}-peer", files, c, latency, result_format)
        done = max(1, n - peer["lost"])
        out["peer"] = {"cpu_s_per_job": round((peer["cpu_s"] - peer_idle["cpu_s"]) / done, 3),
                       "mb_down_per_job": round(peer["bytes"] / done / 1e6, 2),
                       "peak_rss_mb": round(peer["peak_rss_mb"], 1), "lost": peer["lost"]}
    return out


def measure(env: Env, work: Path, files: int = 8, c: int = 8, latency: float = 1.0,
            burst: int = 8) -> dict:
    photos = [camera_jpeg((3000, 2000), seed) for seed in range(files)]
    big = [camera_jpeg((4000, 3000), 100 + seed) for seed in range(burst)]
    results = {
        "6mp_jpeg_out": scenario(env, work, "j6", photos, c, latency, "jpeg"),
        "6mp_png_out": scenario(env, work, "p6", photos, c, latency, "png"),
    }
    if burst:
        results["48mp_burst_jpeg_out"] = scenario(env, work, "b48j", big, burst, latency,
                                                  "jpeg", with_peer=False)
        results["48mp_burst_webp_out"] = scenario(env, work, "b48w", big, burst, latency,
                                                  "webp", with_peer=False)
    return results


#: Goals per job, as ratios to the peer doing the same work: ours ÷ peer at most this.
PEER_RATIO_GOALS = {"cpu_s_per_job": 1.5, "mb_down_per_job": 1.1, "peak_rss_mb": 1.5}


def _ratio(ours: float, peer: float) -> float:
    return ours / peer if peer > 0 else float("inf")


def rows(results: dict) -> list[tuple[str, str, str, bool]]:
    """Table rows: (measure, result, goal, met). Goals are ratios to the peer, and the
    result shows the ratio it is judged by."""
    out = []
    for key in ("6mp_jpeg_out", "6mp_png_out"):
        r = results[key]
        ours, peer = r["ours"], r["peer"]
        label = f"6 MP ×2 {r['output'].upper()} out, per job"
        lost = f", {peer['lost']} of its files lost" if peer["lost"] else ""
        for field, what, unit in (("cpu_s_per_job", "CPU", "s"),
                                  ("mb_down_per_job", "downloaded", "MB"),
                                  ("peak_rss_mb", "peak RSS", "MB")):
            ratio, goal = _ratio(ours[field], peer[field]), PEER_RATIO_GOALS[field]
            out.append((f"{label}: {what}", f"{ratio:.2f}× peer ({ours[field]} {unit}, peer "
                        f"{peer[field]} {unit}{lost if field == 'cpu_s_per_job' else ''})",
                        f"≤ {goal:g}× peer", ratio <= goal))
    for key, limit in (("48mp_burst_jpeg_out", 400), ("48mp_burst_webp_out", 1024)):
        if key not in results:
            continue
        r = results[key]
        out.append((f"{r['files']}× 48 MP results at once, {r['output'].upper()} out",
                    f"peak RSS {r['ours']['peak_rss_mb']} MB, CPU {r['ours']['cpu_s_per_job']}"
                    " s/job", f"< {limit} MB", r["ours"]["peak_rss_mb"] < limit))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--burst", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crystal-watchd-resources-"))
    results = measure(Env(work), work, args.files, args.concurrency, args.latency, args.burst)
    for name, value, goal, ok in rows(results):
        print(f"{name:<44} {value:<44} {goal:<12} {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
