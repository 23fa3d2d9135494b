"""What the job page says about a job's settings and runs (pure functions of the job)."""

from __future__ import annotations

from pathlib import Path

from crystal_watchd.jobs import Job, JobState
from crystal_watchd.web.view import attempts_shown, scale_shown, settings_shown


def job(state: JobState, attempts: int) -> Job:
    return Job(id=1, folder="f", path=Path("/in/a.jpg"), rel="a.jpg", size=1, mtime_ns=1,
               sha256="0" * 64, state=state, attempts=attempts)


def test_local_settings_leave_out_empty_values_and_say_what_is_ignored():
    """A local job's settings: no empty result_format, no fit of None, and creativity
    marked as ignored by the local backend; a fal job's creativity is shown plainly."""
    local = dict(settings_shown({"backend": "local", "scale_factor": 2.0, "creativity": 2.0,
                                 "output_format": "same", "result_format": "", "fit": None,
                                 "dpi": "keep"}))
    assert "result_format" not in local and "fit" not in local
    assert local["creativity"] == "2.0 (ignored by the local backend)"
    assert local["scale_factor"] == "2.0"
    fal = dict(settings_shown({"backend": "fal", "creativity": 2.0, "result_format": "png",
                               "fit": {"long_edge": 4000}}))
    assert fal["creativity"] == "2.0" and fal["result_format"] == "png"
    assert fal["fit"] == '{"long_edge": 4000}'
    assert settings_shown(None) == []


def test_a_done_job_ran_at_least_once():
    """A done job whose first run counted no retry shows one run; others as journaled."""
    assert attempts_shown(job(JobState.DONE, 0)) == 1
    assert attempts_shown(job(JobState.DONE, 3)) == 3
    assert attempts_shown(job(JobState.QUEUED, 0)) == 0


def test_a_fitted_job_says_its_target_not_the_folders_factor():
    """A job with a fit shows the fit's target where others show ×N, and its settings say
    the folder's scale_factor was not what decided its size."""
    fitted = {"backend": "fal", "scale_factor": 2, "fit": {"long_edge": 6000,
                                                             "enlarge_only": True}}
    assert scale_shown(fitted) == "fit to 6000 px on the long edge"
    assert scale_shown({"backend": "fal", "scale_factor": 3}) == "×3"
    assert scale_shown(None) == "×?"
    assert dict(settings_shown(fitted))["scale_factor"].startswith("2 (not used")
