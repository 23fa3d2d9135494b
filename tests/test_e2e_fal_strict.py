"""The daemon against the ways fal is stricter or stranger than a friendly fake: only the
configured app answers, Retry-After above 0, server errors in every shape (fal's JSON, plain
text, nginx's page from fal's ingress, a proxy's HTML page), a failing storage upload PUT, a
result in another format than asked, and an input over fal's documented 100 MB. The real
CLI in a subprocess against the fake fal (tests/fakefal, strict.py)."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from conftest import FAKE_KEY, fal_env, images_in, make_image, wait_for, write_config
from fakefal import Faults
from PIL import Image

#: The endpoint id of fal's model page for Crystal Upscaler.
APP = "clarityai/crystal-upscaler"


def fal_config(tmp_path, folders, **top):
    top.setdefault("retry", {"attempts": 8, "backoff": 0.2, "max_backoff": 1})
    top.setdefault("fal", {"timeout": 60})
    return write_config(tmp_path, folders, backend="fal", **top)


def test_only_the_configured_app_answers(tmp_path, fakefal, fal_daemons, tls_files):
    """The fake, like fal, answers 404 for an app it does not serve. A daemon whose
    fal.endpoint has a typo pauses every submission, naming fal.endpoint, and fails no file;
    with the right endpoint the file goes to fal's crystal-upscaler app."""
    server = fakefal(latency=0.1)
    answer = httpx.post(f"{server.base_url}/clarityai/crystal-upscalr", json={},
                        headers={"Authorization": f"Key {FAKE_KEY}"},
                        verify=ssl.create_default_context(cafile=tls_files["ca"]))
    assert answer.status_code == 404
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"timeout": 60, "endpoint": "clarityai/crystal-upscalr"})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/a.png", (10, 10), fmt="PNG")
    paused = d.wait_event("account_paused")[0]
    assert "fal.endpoint" in paused["reason"] and "crystal-upscalr" in paused["reason"]
    assert server.submissions == [] and not d.named("job_failed")
    assert (tmp_path / "in/a.png").exists()
    assert d.stop() == 0
    config.write_text(config.read_text().replace("crystal-upscalr", "crystal-upscaler"))
    d2 = fal_daemons(config, fal_env(server, tls_files)).ready()
    d2.wait_event("job_done", timeout=20)
    assert [s["app"] for s in server.submissions] == [APP]
    assert d2.stop() == 0


def test_retry_after_on_a_download_is_waited_out(tmp_path, fakefal, fal_daemons, tls_files):
    """A 429 with ``Retry-After: 2`` on the result download: the daemon does not ask again
    sooner than two seconds later, and then gets the result from the same request."""
    server = fakefal(latency=0.1, faults=Faults(http429={"download": 1.0}))
    server.strict.retry_after = 2.0
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/r.png", (10, 10), fmt="PNG")
    wait_for(lambda: len(server.strict.times("download")) >= 2, 30, "two download calls")
    server.faults.http429 = {}
    d.wait_event("job_done", timeout=30)
    times = server.strict.times("download")
    assert all(b - a >= 2.0 - 0.05 for a, b in zip(times, times[1:], strict=False))
    assert len(server.submissions) == 1
    assert d.stop() == 0


@pytest.mark.parametrize("status,body", [(500, "text"), (502, "nginx"), (503, "json"),
                                         (504, "proxy")])
def test_server_errors_of_every_shape_are_retried_in_plain_words(
        status, body, tmp_path, fakefal, fal_daemons, tls_files):
    """5xx answers on submit, status polls, result and download, as fal's JSON, plain text,
    the ingress's nginx page (no x-fal-request-id) or a proxy's HTML page: every file
    completes, each billed once, and no reason in the log carries markup."""
    server = fakefal(latency=0.1, seed=7, faults=Faults(http5xx={
        name: 0.35 for name in ("submit", "status", "result", "download")}))
    server.strict.error_status, server.strict.error_body = status, body
    # A gateway's answer (no x-fal-request-id) to a submit may come after fal took it: it
    # is looked for until fal.timeout before being sent again, so keep that short here.
    gateway = body in ("nginx", "proxy")
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        **({"fal": {"timeout": 10}} if gateway else {}))
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    for i in range(3):
        make_image(tmp_path / f"in/e{i}.png", (10, 8), color=f"#{i}0{i}0{i}0", fmt="PNG")
    d.wait_event("job_done", 3, timeout=90)
    assert len(images_in(tmp_path / "out")) == 3
    assert sorted(server.billed_per_input().values()) == [1, 1, 1]
    retries = (d.named("fal_call_retry") + d.named("job_retry_scheduled")
               + d.named("fal_unreachable"))
    for event in retries:
        text = json.dumps(event)
        assert "<" not in text and "nginx" not in text.lower(), text
    assert d.stop() == 0


def test_a_proxy_error_page_becomes_its_title(tmp_path, fakefal, fal_daemons, tls_files):
    """A 504 HTML page from a proxy (not fal's JSON) on every fetch of the result: the retry
    reason is the page's title, short, never the page."""
    server = fakefal(latency=0.1, faults=Faults(http5xx={"result": 1.0}))
    server.strict.error_status, server.strict.error_body = 504, "proxy"
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/p.png", (10, 10), fmt="PNG")
    # a 504 says fal is away: the breaker's event carries the reason
    retry = d.wait_event("fal_unreachable", timeout=30)[0]
    assert "Error 504 (Gateway Time-out)" in retry["cause"]
    assert "<" not in retry["cause"] and len(retry["cause"]) < 200
    server.faults.http5xx = {}
    d.wait_event("job_done", timeout=30)
    assert len(server.submissions) == 1
    assert d.stop() == 0


def test_a_failing_storage_put_is_retried(tmp_path, fakefal, fal_daemons, tls_files):
    """The CDN upload is refused, so fal-client falls back to storage (initiate, then PUT),
    and half the PUTs fail with a 500: the input still gets to fal, once."""
    server = fakefal(latency=0.1, seed=3, faults=Faults(http5xx={"token": 1.0}))
    server.strict.put_failure = 0.5
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}],
                        fal={"timeout": 60, "upload": "cdn"})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    for i in range(3):
        make_image(tmp_path / f"in/u{i}.png", (12, 8), color=f"#{i}{i}0000", fmt="PNG")
    d.wait_event("job_done", 3, timeout=60)
    assert len(server.strict.times("put")) >= 3
    assert len(server.submissions) == 3
    assert sorted(server.billed_per_input().values()) == [1, 1, 1]
    assert d.stop() == 0


def test_a_result_in_another_format_than_asked_is_converted(tmp_path, fakefal, fal_daemons,
                                                           tls_files):
    """fal answers PNG where JPEG was asked (and JPEG where PNG was): each output still has
    the folder's format and the name's extension, at the right size."""
    server = fakefal(latency=0.1)
    server.strict.wrong_format = True
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/photo.jpg", (40, 30))
    make_image(tmp_path / "in/scan.png", (20, 10), fmt="PNG")
    d.wait_event("job_done", 2)
    asked = sorted(s["output_format"] for s in server.submissions)
    assert asked == ["jpg", "png"]
    assert images_in(tmp_path / "out") == {"photo_x2.jpg": (80, 60), "scan_x2.png": (40, 20)}
    for name, fmt in (("photo_x2.jpg", "JPEG"), ("scan_x2.png", "PNG")):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.format == fmt
    assert d.stop() == 0


def test_an_input_over_100_mb_is_never_sent(tmp_path, fakefal, fal_daemons, tls_files):
    """fal accepts inputs up to 100 MB. A JPEG whose file is over that (a small picture with
    a 101 MB trailer, as phones append videos) fails with that reason before any upload or
    submission, instead of being uploaded for a certain rejection."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    staged = make_image(tmp_path / "staging/movie.jpg", (40, 30))
    with open(staged, "ab") as fh:
        chunk = bytes(range(1, 256)) * 4096
        for _ in range(101 * 2**20 // len(chunk) + 1):
            fh.write(chunk)
    staged.rename(tmp_path / "in/movie.jpg")
    failed = d.wait_event("job_failed", timeout=60)[0]
    assert "100 MB" in failed["reason"]
    assert server.submissions == [] and server.calls["upload"] == 0
    assert (tmp_path / "in/failed/movie.jpg").exists()
    assert d.stop() == 0


def test_inputs_at_and_below_fals_smallest_size(tmp_path, fakefal, fal_daemons, tls_files):
    """fal needs inputs of at least 2×2 pixels: a 2×2 image goes through (the fake accepts
    it), a 1×5 one fails with that reason before any submission."""
    server = fakefal(latency=0.1)
    config = fal_config(tmp_path, [{"inbox": "in", "outbox": "out", "settle": 0.2}])
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    make_image(tmp_path / "in/dot.png", (2, 2), fmt="PNG")
    make_image(tmp_path / "in/line.png", (1, 5), fmt="PNG")
    failed = d.wait_event("job_failed", timeout=30)[0]
    d.wait_event("job_done", timeout=30)
    assert failed["file"].endswith("line.png") and "2×2" in failed["reason"]
    assert images_in(tmp_path / "out") == {"dot_x2.png": (4, 4)}
    assert len(server.submissions) == 1
    assert [row["outcome"] for row in server.ledger] == ["ok"]
    assert d.stop() == 0
