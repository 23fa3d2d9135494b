"""The do-it-yourself watcher a user would write, for the benchmark to compare against.

watchdog + a thread pool of C workers, each sending the input (inline as a data URI or
through ``fal_client.upload_file``), calling ``fal_client.subscribe`` and downloading the
result with httpx. No journal, no settling beyond waiting for the close of the write, no
retries.

For a fair comparison it is given the same work as the daemon it is measured against: the
same ``output_format`` asked of fal, and the same upload mode as the daemon's ``fal.upload``:
``auto`` and ``cdn`` upload every input (the daemon's ``auto`` does, so that a submission
whose answer is lost can be found in fal's request list by its file's URL), ``data-uri``
sends each inline.

    FAL_* / SSL_CERT_FILE / FAKEFAL_BASE_URL set as for the daemon;
    python bench/peer.py INBOX OUTBOX CONCURRENCY SCALE png|jpg auto|data-uri|cdn
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fal_client
import fal_client.client as fal_client_module
import httpx
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

fal_client_module.REST_URL = os.environ["FAKEFAL_BASE_URL"]
fal_client_module.CDN_URL = os.environ["FAKEFAL_BASE_URL"]


def main() -> None:
    inbox, outbox = Path(sys.argv[1]), Path(sys.argv[2])
    concurrency, scale = int(sys.argv[3]), float(sys.argv[4])
    output_format, upload = sys.argv[5], sys.argv[6]
    assert output_format in ("png", "jpg") and upload in ("auto", "data-uri", "cdn")
    arguments = {"output_format": output_format}
    ext = f".{output_format}"
    outbox.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(concurrency)
    seen: set[str] = set()
    lock = threading.Lock()

    def process(path: str) -> None:
        url = (fal_client.encode_file(path) if upload == "data-uri"
               else fal_client.upload_file(path))
        result = fal_client.subscribe("clarityai/crystal-upscaler",
                                      {"image_url": url, "scale_factor": scale, **arguments})
        image = result["images"][0]
        data = httpx.get(image["url"] if isinstance(image, dict) else image).content
        target = outbox / (Path(path).stem + ext)
        target.write_bytes(data)

    class Handler(FileSystemEventHandler):
        def on_closed(self, event):
            with lock:
                if event.src_path in seen:
                    return
                seen.add(event.src_path)
            pool.submit(process, event.src_path)

    observer = Observer()
    observer.schedule(Handler(), str(inbox))
    observer.start()
    print("peer_ready", flush=True)
    try:
        while True:
            time.sleep(1)
    finally:
        observer.stop()


if __name__ == "__main__":
    main()
