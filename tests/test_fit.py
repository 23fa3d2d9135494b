"""``fit:`` without pictures: each picture's factor from the target, its clamps, the config
rules around it, the job settings that tell fit folders apart, and what ``check`` says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from crystal_watchd import config as config_mod
from crystal_watchd.commands import check
from crystal_watchd.config import FitTarget, FolderConfig
from crystal_watchd.errors import ConfigError
from crystal_watchd.images import preflight
from crystal_watchd.jobs import Settings


def folder(fit: FitTarget | None = None, **kw) -> FolderConfig:
    return FolderConfig("prints", Path("/in"), Path("/out"), fit=fit, **kw)


PRINT_40X60 = FitTarget(print="40x60cm", dpi=300)


@pytest.mark.parametrize(("size", "scale"), [
    ((1632, 1224), 4.3425),   # a 2 MP phone picture
    ((4000, 3000), 1.7717),   # a 12 MP scan
    ((6000, 4000), 1.1812),   # a 24 MP DSLR frame
    ((4000, 6000), 1.1812),   # the same frame upright (portrait): its long edge is fitted
])
def test_each_picture_gets_the_factor_its_own_size_needs(size, scale):
    """A 40x60 cm print at 300 dpi is 7087 px on the long edge: each picture's factor brings
    its long edge there exactly, the short edge keeping its aspect, and nothing is reduced."""
    plan = preflight.plan(*size, 2.0, folder(PRINT_40X60), "JPEG")
    assert plan.scale == scale
    assert max(plan.width, plan.height) == 7087
    assert abs(plan.width / plan.height - size[0] / size[1]) < 0.001
    assert not plan.reduced and not plan.as_is
    assert plan.paid_megapixels == plan.megapixels


def test_a_picture_already_big_enough_is_kept_unpaid_or_sent_at_one():
    """A 45 MP frame already exceeds 7087 px: kept as it is at its own size and estimated at
    nothing; with enlarge_only false it goes to the upscaler at ×1 and is paid."""
    kept = preflight.plan(8256, 5504, 2.0, folder(PRINT_40X60), "JPEG")
    assert (kept.scale, kept.width, kept.height, kept.as_is) == (1.0, 8256, 5504, True)
    assert kept.paid_megapixels == 0.0
    sent = preflight.plan(8256, 5504, 2.0, folder(FitTarget(long_edge=7087,
                                                            enlarge_only=False)), "JPEG")
    assert (sent.scale, sent.width, sent.as_is) == (1.0, 8256, False)
    assert sent.paid_megapixels == pytest.approx(8256 * 5504 / 1e6)


def test_a_megapixel_target_fits_the_pixel_count():
    """``megapixels: 36`` brings a 24 MP frame to 36 MP, whatever its aspect."""
    plan = preflight.plan(6000, 4000, 2.0, folder(FitTarget(megapixels=36)))
    assert plan.megapixels == pytest.approx(36, abs=0.02)
    assert plan.width / plan.height == pytest.approx(1.5, abs=0.001)


@pytest.mark.parametrize(("size", "target", "fmt", "check"), [
    # 14000 px on a 3:2 picture would be 130 MP: clamped to the upscaler's 100 MP
    ((300, 200), FitTarget(long_edge=14000), "PNG", lambda p: p.megapixels <= 100),
    # a panorama to 65535 px: within 65535 a side, but 286 MP: clamped to 100 MP
    ((3000, 200), FitTarget(long_edge=65535), "PNG", lambda p: p.megapixels <= 100),
    # WebP stores at most 16383 px a side
    ((1000, 100), FitTarget(long_edge=20000), "WEBP", lambda p: p.width <= 16383),
    # a thumbnail to 36 MP would need ×600: the upscaler goes to ×200
    ((10, 10), FitTarget(megapixels=36), "PNG", lambda p: p.scale == 200),
])
def test_a_target_beyond_the_limits_is_clamped_and_says_so(size, target, fmt, check):
    """A fit never fails for asking too much, whatever ``oversize`` says: the factor is
    lowered to the output limits (or the upscaler's ×200) and the plan says it was reduced,
    with the factor that was asked for (the worker warns with both)."""
    plan = preflight.plan(*size, 2.0, folder(target, oversize="fail"), fmt)
    assert plan.reduced and check(plan)
    assert plan.requested > plan.scale


def test_a_factor_folder_plans_as_before():
    """Without fit, scale_factor and oversize decide as they always did."""
    plan = preflight.plan(100, 50, 3.0, folder())
    assert (plan.scale, plan.width, plan.height, plan.requested) == (3.0, 300, 150, 3.0)
    with pytest.raises(Exception, match="oversize: reduce"):
        preflight.plan(10000, 10000, 3.0, folder())


def _problems(text: str, file: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(text, file)
    return [str(p) for p in info.value.problems]


def test_fit_and_scale_factor_in_one_mapping_is_an_error_with_file_and_line(tmp_path):
    """Both keys in one folder, or both under defaults:, name the file, the line and the
    key; a print's dpi contradicted beside it too."""
    file = tmp_path / "c.yaml"
    found = _problems("backend: local\n"                          # 1
                      "defaults:\n"                               # 2
                      "  scale_factor: 2\n"                       # 3
                      "  fit: {megapixels: 36}\n"                 # 4
                      "folders:\n"                                # 5
                      "  - inbox: a\n"                            # 6
                      "    outbox: b\n"                           # 7
                      "    scale_factor: 3\n"                     # 8
                      "    fit: {long_edge: 7087}\n"              # 9
                      "  - inbox: c\n"                            # 10
                      "    outbox: d\n"                           # 11
                      "    fit: {print: 40x60cm, dpi: 300}\n"     # 12
                      "    dpi: 240\n", file)                     # 13
    both = "set either fit (a size to fit each picture to) or scale_factor (a fixed factor), " \
           "not both"
    assert f"{file}:4: defaults.fit: {both}" in found
    assert f"{file}:9: folders[0].fit: {both}" in found
    assert any(p.startswith(f"{file}:13: folders[1].dpi: the fit's print is made at 300 dpi")
               for p in found)


@pytest.mark.parametrize(("fit", "message"), [
    ("{}", "needs exactly one of long_edge, print or megapixels"),
    ("{long_edge: 7087, megapixels: 36}", "not long_edge and megapixels"),
    ("{print: 40x60}", "must be a print size such as 40x60cm"),
    ("{long_edge: 7087, dpi: 300}", "dpi goes with print"),
    ("{print: 300x600cm}", "over the 65535 px an output can have"),
    ("{megapixels: 150}", "must be from 0.001 to 100"),
])
def test_a_fit_that_cannot_be_met_is_refused(tmp_path, fit, message):
    """No target, two targets, a print size without its unit, dpi without a print and
    targets beyond what an output can be are config errors at the fit's line."""
    file = tmp_path / "c.yaml"
    found = _problems(f"folders:\n  - inbox: a\n    outbox: b\n    fit: {fit}\n", file)
    assert any(p.startswith(f"{file}:4: folders[0].fit") and message in p for p in found), found


def test_a_folders_own_key_replaces_the_inherited_one(tmp_path):
    """defaults: fit and a folder's own scale_factor (or the reverse) is no error: the
    folder's own key wins. A print target declares its dpi (inches work too), unless the
    folder sets its own dpi beside an inherited fit."""
    file = tmp_path / "c.yaml"
    config = config_mod.parse(
        "backend: local\n"
        "defaults: {fit: {print: 16x24in, dpi: 240}}\n"
        "folders:\n"
        "  - {name: inherits, inbox: a, outbox: b}\n"
        "  - {name: factor, inbox: c, outbox: d, scale_factor: 3}\n"
        "  - {name: own-dpi, inbox: e, outbox: f, dpi: keep}\n"
        "  - {name: pixels, inbox: g, outbox: h, fit: {long_edge: 5000}}\n", file)
    by = {f.name: f for f in config.folders}
    assert by["inherits"].fit == FitTarget(print="16x24in", dpi=240)
    assert by["inherits"].fit.long_edge_px == 5760
    assert by["inherits"].dpi == 240
    assert by["factor"].fit is None and by["factor"].scale_factor == 3
    assert by["own-dpi"].fit is not None and by["own-dpi"].dpi == "keep"
    assert by["pixels"].fit == FitTarget(long_edge=5000) and by["pixels"].dpi == "keep"
    assert config.describe()["folders"][3]["fit"]["long_edge"] == 5000


def test_job_settings_tell_fit_folders_apart_and_keep_old_keys():
    """Two folders fitting to different sizes give different settings keys (neither copies
    the other's output); a factor folder's key is what it was before fit existed."""
    base = ("fal", 2.0, 0.0, "same", "auto")
    old = Settings(*base)
    assert json.loads(old.key()) == {"backend": "fal", "scale_factor": 2.0, "creativity": 0.0,
                                     "output_format": "same", "result_format": "auto"}
    a = Settings(*base, fit=FitTarget(long_edge=7087).plain())
    b = Settings(*base, fit=FitTarget(long_edge=5000).plain())
    assert len({old.key(), a.key(), b.key()}) == 3
    # journaled as JSON and read back, the settings find the same target again
    again = Settings(**json.loads(json.dumps(a.__dict__)))
    assert FitTarget.from_plain(again.fit) == FitTarget(long_edge=7087)


def test_check_says_what_a_fit_folder_makes_and_costs(tmp_path):
    """check's folder summary describes the target and its estimate from the target itself:
    7087 px on a 3:2 picture is about 33 MP, $0.54 at $0.016/MP."""
    file = tmp_path / "c.yaml"
    config = config_mod.parse(
        "backend: fal\n"
        "folders:\n"
        "  - {name: lab, inbox: a, outbox: b, fit: {long_edge: 7087}}\n"
        "  - {name: prints, inbox: c, outbox: d, fit: {print: 40x60cm, dpi: 300}}\n"
        "  - {name: plain, inbox: e, outbox: f, scale_factor: 3}\n", file)
    lines = check.summary(check.Context(config, environ={}))
    text = "\n".join(lines)
    assert ("lab: fits each picture to 7087 px on the long edge (≈ 33 MP for a 3:2 picture, "
            "about $0.54 a picture); copies one already that large as it is, unpaid") in text
    assert "prints: fits each picture to a 40x60cm print at 300 dpi, 7087 px on the long edge" \
        in text
    assert any("plain" in line and "×3" in line for line in lines)
    assert not any(line.strip().startswith("plain:") for line in lines)


def test_schema_and_example_document_fit():
    """config.schema.json describes fit and its keys; config.example.yaml shows a print
    folder that loads with the dpi its print declares."""
    schema = json.loads((ROOT / "config.schema.json").read_text())
    fit = schema["$defs"]["FitSettings"]
    assert {"long_edge", "print", "dpi", "megapixels", "enlarge_only"} <= set(fit["properties"])
    assert "fit" in schema["$defs"]["FolderEntry"]["properties"]
    example = config_mod.load(ROOT / "config.example.yaml")
    prints = example.folder("prints")
    assert prints is not None and prints.fit == PRINT_40X60 and prints.dpi == 300


def test_the_spend_guard_estimates_each_picture_at_its_fitted_size(tmp_path):
    """The spend guard (and check's backlog, which uses it) prices each waiting picture from
    its header at the factor the fit gives it, and a picture already large enough at $0:
    a 1632x1224 phone picture fitted to 7087 px is 7087x5315 px, $0.60 at $0.016/MP."""
    from conftest import make_image

    from crystal_watchd.daemon import spendguard

    inbox = tmp_path / "in"
    make_image(inbox / "phone.jpg", (1632, 1224))
    make_image(inbox / "big.jpg", (8256, 5504))
    prints = FolderConfig("prints", inbox, tmp_path / "out", fit=FitTarget(long_edge=7087))
    assert spendguard.estimate_file(inbox / "phone.jpg", prints, 0.016) == \
        pytest.approx(7087 * 5315 / 1e6 * 0.016)
    assert spendguard.estimate_file(inbox / "big.jpg", prints, 0.016) == 0.0
    count, usd = spendguard.estimate_backlog(prints, 0.016)
    assert (count, usd) == (2, pytest.approx(7087 * 5315 / 1e6 * 0.016))
