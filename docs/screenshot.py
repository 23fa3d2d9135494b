"""Make the README's screenshot of the web page with the real daemon and Debian's chromium.

    python docs/screenshot.py        # writes docs/web-jobs.png

Runs ``crystal-watchd run`` with the offline local backend on a temporary folder, drops a
few generated pictures and one broken file, and photographs the pages with Playwright
driving /usr/bin/chromium (no browser download).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def picture(path: Path, seed: int, size=(640, 427)) -> None:
    """A small landscape-like picture: sky gradient, sun, hills."""
    w, h = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    top = [(70, 130, 200), (240, 150, 90), (40, 60, 110), (150, 190, 220)][seed % 4]
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=tuple(int(c * (1 - t) + 250 * t) for c in top))
    draw.ellipse([w * 0.65, h * 0.12, w * 0.8, h * 0.35], fill=(255, 230, 150))
    for layer in range(3):
        colour = [(60, 110, 70), (40, 90, 60), (25, 60, 45)][layer]
        points = [(x, h * (0.55 + 0.12 * layer) + 30 * math.sin(x / (70 + 25 * seed) + layer))
                  for x in range(0, w + 10, 10)]
        draw.polygon([(0, h), *points, (w, h)], fill=colour)
    image.filter(ImageFilter.GaussianBlur(1.5)).save(path, quality=88)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "backend": "local", "state_dir": str(work / "state"),
            "log": {"format": "json"}, "http": {"listen": "127.0.0.1:0"},
            "folders": [{"name": "weddings", "inbox": str(work / "in/weddings"),
                         "outbox": str(work / "out/weddings"), "scale_factor": 2, "settle": 0.3},
                        {"name": "products", "inbox": str(work / "in/products"),
                         "outbox": str(work / "out/products"), "scale_factor": 4,
                         "creativity": 2, "settle": 0.3}]}))
        log = work / "daemon.log"
        with open(log, "w") as out:  # the daemon writes through its own copy
            proc = subprocess.Popen([sys.executable, "-m", "crystal_watchd", "run", "-c",
                                     str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            url = None
            while url is None:
                time.sleep(0.2)
                for line in log.read_text().splitlines():
                    if '"http_listening"' in line:
                        url = json.loads(line)["url"]
            for i, name in enumerate(["ceremony", "first-dance", "sunset-walk", "toast"]):
                (work / "in/weddings").mkdir(parents=True, exist_ok=True)
                picture(work / "in/weddings" / f"{name}.jpg", i)
            (work / "in/products").mkdir(parents=True, exist_ok=True)
            picture(work / "in/products/teapot.jpg", 5, (400, 400))
            (work / "in/products/label-scan.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
            time.sleep(6)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
                page = browser.new_page(viewport={"width": 1100, "height": 760})
                page.goto(url + "jobs")
                page.wait_for_timeout(1500)
                page.screenshot(path=ROOT / "docs/web-jobs.png")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
