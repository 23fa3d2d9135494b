"""The backlog rows of bench/run.py alone: journaling a big drop, and a restart over many
done files.

    python bench/backlog.py [--backlog 10000] [--done 100000]

Prints the same numbers ``bench/run.py`` keeps under ``backlog`` in its results, as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--done", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crystal-watchd-backlog-"))
    try:
        result = run.backlog(run.Env(work), work, args.backlog, args.done)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
