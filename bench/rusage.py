"""Run a command and report its CPU time and peak RSS from the kernel.

    python bench/rusage.py OUT.json PROGRAM [ARGS…]

``ru_maxrss`` counts the memory a process had just before it exec'd as well, so a command
started straight from a large process (the benchmark holds the fake fal's results) would
inherit that process's size. This small process starts the command instead, forwards
SIGTERM and SIGINT to it, reaps it with ``os.wait4`` and writes
``{"cpu_s", "peak_rss_mb", "exit"}`` to OUT.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    with open(out, "w") as fh:
        json.dump({"cpu_s": usage.ru_utime + usage.ru_stime,
                   "peak_rss_mb": usage.ru_maxrss / 1024,
                   "exit": os.waitstatus_to_exitcode(status)}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
