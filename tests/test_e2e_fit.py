"""``fit:`` end to end: the real CLI in a subprocess turns pictures of any size into the
print size, with the local backend for the output sizes and the fake fal for the factor
each picture needed and what was billed.

The pictures are the issue's at a tenth of their size, and so is the print: 40×60 cm at
30 dpi is 709 px on the long edge (7087 px at 300 dpi).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import cli, fal_env, images_in, make_image, write_config
from PIL import Image

LONG_EDGE = 709
PRINT = {"print": "40x60cm", "dpi": 30}
#: name → stored size; the portrait is stored landscape with an EXIF turn of 90°.
PICTURES = {"phone.jpg": (163, 122), "scan.jpg": (400, 300), "dslr.jpg": (600, 400),
            "portrait.jpg": (600, 400)}
#: Already larger than the print needs (a 45 MP frame at a tenth).
BIG = ("big.jpg", (826, 550))


def drop_pictures(inbox: Path) -> None:
    for name, size in PICTURES.items():
        if name == "portrait.jpg":
            exif = Image.Exif()
            exif[0x0112] = 6  # shown turned 90°: upright it is 400×600
            make_image(inbox / name, size, exif=exif.tobytes())
        else:
            make_image(inbox / name, size)
    make_image(inbox / BIG[0], BIG[1], color="blue", dpi=(72, 72))


def events(stderr: str, name: str) -> list[dict]:
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def test_every_picture_comes_out_at_the_print_size_and_the_big_one_as_it_is(tmp_path):
    """``once`` with a print folder: the phone picture, the scan, the DSLR frame and the
    upright portrait all come out 709 px on the long edge (±1), keeping their aspect and
    declaring the print's 30 dpi; the picture already larger is written at its own size with
    its pixels untouched, declaring 30 dpi too, and costs nothing."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "fit": PRINT,
                                      "filename": "{stem}.{ext}"}])
    drop_pictures(tmp_path / "in")
    result = cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    sizes = images_in(tmp_path / "out")
    assert set(sizes) == {*PICTURES, BIG[0]}
    for name, (w, h) in PICTURES.items():
        out_w, out_h = sizes[name]
        if name == "portrait.jpg":
            w, h = h, w
            assert out_h > out_w  # upright
        assert abs(max(out_w, out_h) - LONG_EDGE) <= 1, (name, sizes[name])
        assert abs(out_w / out_h - w / h) < 0.01, name
        with Image.open(tmp_path / "out" / name) as im:
            assert tuple(round(d) for d in im.info["dpi"]) == (30, 30)
    assert sizes[BIG[0]] == BIG[1]
    with Image.open(tmp_path / "in" / BIG[0]) as src, \
            Image.open(tmp_path / "out" / BIG[0]) as out:
        assert tuple(round(d) for d in out.info["dpi"]) == (30, 30)
        assert out.tobytes() == src.tobytes()  # the same pixels: not re-encoded
    kept = events(result.stderr, "upscale_not_needed")
    assert [e["file"] for e in kept] == [BIG[0]]
    assert "709 px on the long edge" in kept[0]["fit"]


def test_a_target_beyond_the_output_limit_is_clamped_with_a_warning(tmp_path):
    """A long edge the folder's output limit cannot hold (2000 px of a 3:2 picture is
    2.7 MP, the folder allows 1 MP) is clamped to the limit, not failed, and warned of
    with the factor asked for and the one used."""
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out",
                                      "fit": {"long_edge": 2000},
                                      "max_output_megapixels": 1, "filename": "{stem}.{ext}"}])
    make_image(tmp_path / "in/wide.png", (300, 200))
    result = cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    (w, h), = images_in(tmp_path / "out").values()
    assert w * h <= 1_000_000 and w > 1000
    reduced = events(result.stderr, "scale_reduced")
    assert len(reduced) == 1
    assert abs(reduced[0]["requested"] - 2000 / 300) < 0.001
    assert reduced[0]["used"] < reduced[0]["requested"]


def test_fal_is_sent_the_factor_each_picture_needs_and_never_paid_for_the_big_one(
        tmp_path, fakefal, fal_daemons, tls_files):
    """With fal, each picture is submitted with the factor its own size needs (709 px over
    its long edge), the outputs are at the print size, and the picture already large enough
    is never submitted: fal's ledger bills four pictures and status shows that spend, with
    the kept picture at $0."""
    server = fakefal(latency=0.1)
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out", "fit": PRINT}],
                          backend="fal", fal={"timeout": 60},
                          retry={"attempts": 6, "backoff": 0.2, "max_backoff": 1})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    drop_pictures(tmp_path / "in")
    d.wait_event("job_done", len(PICTURES) + 1, timeout=60)
    expected = sorted(LONG_EDGE / max(size) for size in PICTURES.values())
    sent = sorted(s["scale_factor"] for s in server.submissions)
    assert len(sent) == len(expected)
    assert all(abs(a - b) < 0.001 for a, b in zip(sent, expected, strict=True)), sent
    big_sha = hashlib.sha256((tmp_path / "in" / BIG[0]).read_bytes()).hexdigest()
    assert big_sha not in server.billed_per_input()
    assert sorted(server.billed_per_input().values()) == [1] * len(PICTURES)
    outputs = images_in(tmp_path / "out")
    assert len(outputs) == len(PICTURES) + 1
    assert sorted(max(s) for s in outputs.values()) == [LONG_EDGE] * len(PICTURES) + [826]
    assert d.stop() == 0
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    billed_mp = sum(row["output_megapixels"] for row in server.ledger)
    assert abs(report["spend"]["total_usd"] - billed_mp * 0.016) < 1e-6
