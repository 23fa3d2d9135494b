"""The review routes of a real daemon (the CLI in a subprocess): the compare view, its
deep-zoom descriptor and tiles, the job page's file facts and the downloads."""

from __future__ import annotations

import io
import re
import stat
from urllib.parse import quote

import httpx
from conftest import make_image
from PIL import Image, ImageChops, ImageStat
from test_web import page_url, web_config

TOKEN = "review-token-3c9d1e7a5f"
NAME = 'Café "x" <b>.jpg'


def routes(job_id: int = 1) -> list[str]:
    return [f"/jobs/{job_id}/compare", f"/jobs/{job_id}/tiles/after.dzi",
            f"/jobs/{job_id}/tiles/before.dzi", f"/jobs/{job_id}/tiles/after_files/0/0_0.jpg",
            f"/jobs/{job_id}/original", f"/jobs/{job_id}/outputs/0"]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return max(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean)


def test_review_routes_need_the_token_and_this_host(tmp_path, daemons):
    """Every new route (compare page, descriptors, tiles, downloads) answers 401 without the
    token or with a wrong one, 421 for a foreign Host even with the token, and 200 with the
    bearer token; the token is in no answer."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    d = daemons(web_config(tmp_path, token_file=str(token_file))).ready()
    url = page_url(d)
    make_image(tmp_path / "in/a.jpg", (300, 200))
    d.wait_event("job_done")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        for path in routes():
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer no"}).status_code == 401
            foreign = client.get(path, headers={**auth, "Host": "evil.example"})
            assert foreign.status_code == 421, path
            assert foreign.content[:2] != b"\xff\xd8"
            ok = client.get(path, headers=auth)
            assert ok.status_code == 200, path
            assert TOKEN.encode() not in ok.content
        for path in ("/jobs/9/compare", "/jobs/1/outputs/1", "/jobs/1/tiles/after_files/99/0_0.jpg",
                     "/jobs/1/tiles/after_files/0/5_0.jpg", "/jobs/1/tiles/other.dzi"):
            assert client.get(path, headers=auth).status_code == 404, path
    assert d.stop() == 0


def test_compare_view_tiles_are_the_output_pixels_in_one_grid(tmp_path, daemons):
    """The compare page carries the strict CSP and the viewer script from /static (no other
    origin); both descriptors give the output's size; a full-resolution tile of the after is
    the output's own pixels at that place, the before's tile at the same address shows the
    original scaled to the same framing (same picture, close but not identical); the lowest
    level is one small tile."""
    d = daemons(web_config(tmp_path)).ready()
    url = page_url(d)
    source = Image.merge("RGB", [Image.effect_noise((40, 30), 90).resize((600, 400))
                                 for _ in range(3)])
    (tmp_path / "in").mkdir(exist_ok=True)
    source.save(tmp_path / "in/portrait.png")
    d.wait_event("job_done")
    with httpx.Client(base_url=url) as client:
        page = client.get("/jobs/1/compare")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "http" not in csp
        assert '<script src="/static/openseadragon.min.js"' in page.text
        assert "live.js" not in page.text  # the viewer is not swapped out by live refresh
        assert re.findall(r'<script src="([^"]+)"', page.text) == [
            "/static/openseadragon.min.js", "/static/compare.js"]
        assert client.get("/static/openseadragon.min.js").status_code == 200
        assert "openseadragon 6.1.1" in client.get("/static/openseadragon.min.js").text[:80]
        output_path = next((tmp_path / "out").iterdir())
        output = Image.open(output_path).convert("RGB")
        for kind in ("after", "before"):
            dzi = client.get(f"/jobs/1/tiles/{kind}.dzi").text
            assert f'Width="{output.width}" Height="{output.height}"' in dzi
            assert 'Overlap="1" TileSize="254"' in dzi
        top = (max(output.size) - 1).bit_length()
        after = Image.open(io.BytesIO(client.get(f"/jobs/1/tiles/after_files/{top}/1_1.jpg")
                                      .content))
        assert after.size == (256, 256)
        crop = output.crop((253, 253, 509, 509))
        assert mean_difference(after, crop) < 4  # JPEG tiles at quality 90
        before = Image.open(io.BytesIO(client.get(f"/jobs/1/tiles/before_files/{top}/1_1.jpg")
                                       .content))
        assert before.size == (256, 256)
        scaled = source.resize(output.size, Image.Resampling.BICUBIC).crop((253, 253, 509, 509))
        assert mean_difference(before, scaled) < 6
        assert mean_difference(after, ImageChops.offset(crop, 40, 40)) > 8  # it can fail
        smallest = Image.open(io.BytesIO(client.get("/jobs/1/tiles/after_files/0/0_0.jpg")
                                         .content))
        assert smallest.size == (1, 1)
    assert d.stop() == 0


def test_downloads_are_the_files_bytes_under_their_exact_names(tmp_path, daemons):
    """The original and the output download byte for byte as on disk, even with a gzip'd
    sibling beside them; a name with non-ASCII, quotes and angle brackets is sent as an
    RFC 5987 filename* with an ASCII fallback that has no quote, and the job page escapes
    it; the job page shows pixel sizes, formats, file sizes and the links."""
    d = daemons(web_config(tmp_path)).ready()
    url = page_url(d)
    make_image(tmp_path / "in" / NAME, (120, 80))
    d.wait_event("job_done")
    original = tmp_path / "in" / NAME
    output_path = next((tmp_path / "out").iterdir())
    (output_path.parent / (output_path.name + ".gz")).write_bytes(b"not the picture")
    with httpx.Client(base_url=url, headers={"Accept-Encoding": "gzip"}) as client:
        got = client.get("/jobs/1/original")
        assert got.content == original.read_bytes()
        disposition = got.headers["content-disposition"]
        assert f"filename*=UTF-8''{quote(NAME, safe='')}" in disposition
        fallback = re.search(r'filename="([^"]*)"', disposition).group(1)
        assert fallback.isascii() and '"' not in fallback and fallback.endswith(".jpg")
        assert got.headers["x-content-type-options"] == "nosniff"
        out = client.get("/jobs/1/outputs/0")
        assert out.content == output_path.read_bytes()
        assert int(out.headers["content-length"]) == output_path.stat().st_size
        page = client.get("/jobs/1").text
        assert "<b>" not in page and "&lt;b&gt;" in page
        assert "120 × 80 px" in page and "240 × 160 px" in page
        assert f"{original.stat().st_size} bytes" in page
        assert 'href="/jobs/1/original"' in page and 'href="/jobs/1/outputs/0"' in page
        assert 'href="/jobs/1/compare"' in page
    assert d.stop() == 0


def test_a_jobs_timings_are_on_its_page_after_a_restart(tmp_path, daemons):
    """The job page's timings (queued, started, done) come from the journal: a daemon
    started after the job finished shows them, in order, with their offsets; the daemon
    that ran the job also shows when it wrote the output."""
    def timings(daemon) -> tuple[list[str], list[float]]:
        with httpx.Client(base_url=page_url(daemon)) as client:
            page = client.get("/jobs/1").text
        table = re.search(r'<table class="phases">(.*?)</table>', page, re.S)
        assert table is not None, "no timings on the page"
        return (re.findall(r"<tr><th>([^<]+)</th>", table.group(1)),
                [float(x) for x in re.findall(r"\+([0-9.]+) s", table.group(1))])

    config = web_config(tmp_path)
    first = daemons(config).ready()
    make_image(tmp_path / "in/a.jpg", (120, 80))
    first.wait_event("job_done")
    assert timings(first)[0] == ["queued", "started", "output written", "done"]
    assert first.stop() == 0
    second = daemons(config).ready()
    names, offsets = timings(second)
    assert names == ["queued", "started", "done"]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < 60
    assert second.stop() == 0
