"""The web page, /metrics and /healthz of a real daemon (the CLI in a subprocess), over HTTP."""

from __future__ import annotations

import json
import re
import stat

import httpx
import pytest
from conftest import FAKE_KEY, cli, fal_env, make_image, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "page-token-7f3a9c1e5b2d"


def web_config(tmp_path, folders=None, **http):
    http.setdefault("listen", "127.0.0.1:0")
    return write_config(tmp_path, folders or [{"name": "photos", "inbox": "in",
                                               "outbox": "out"}], http=http)


def page_url(daemon) -> str:
    return daemon.wait_event("http_listening")[0]["url"]


def form_token(html: str) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', html)
    assert match, "no form token in the page"
    return match.group(1)


def test_non_loopback_listen_without_token_is_a_config_error(tmp_path):
    """Listening on all addresses without a token exits 78 naming file, line and key;
    with a token the same config passes `check`, and the token is masked there."""
    config = web_config(tmp_path, listen="0.0.0.0:8765")
    result = cli("run", "--config", str(config), timeout=30)
    assert result.returncode == 78
    assert re.search(rf"{re.escape(str(config))}:\d+: http\.listen: listening on 0\.0\.0\.0 "
                     r"\(not a loopback address\) needs http\.token", result.stderr)
    config = web_config(tmp_path, listen="0.0.0.0:8765", token=TOKEN)
    checked = cli("check", "--config", str(config))
    assert checked.returncode == 0
    assert TOKEN not in checked.stdout and json.loads(checked.stdout)["http"]["token"] == "***"


def test_bad_listen_value_names_the_key(tmp_path):
    """A listen value without a port is refused with exit 78 and says what is expected."""
    config = web_config(tmp_path, listen="localhost")
    result = cli("check", "--config", str(config))
    assert result.returncode == 78 and "http.listen: must be HOST:PORT" in result.stderr


def test_token_guards_every_page_and_never_leaks(tmp_path, daemons):
    """With a token: no or a wrong token gets 401 (pages, metrics, thumbnails); the bearer
    token and the login cookie both let in; the token shows up in no page, log line or
    metric; /healthz stays open for health checks."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    config = web_config(tmp_path, token_file=str(token_file))
    d = daemons(config).ready()
    url = page_url(d)
    make_image(tmp_path / "in/a.jpg", (60, 40))
    d.wait_event("job_done")
    seen = []
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        for path in ("/", "/jobs", "/failures", "/jobs/1", "/metrics", "/thumbs/1/after.jpg",
                     "/events"):
            assert client.get(path).status_code == 401
            wrong = client.get(path, headers={"Authorization": "Bearer wrong-token"})
            assert wrong.status_code == 401
        browser = client.get("/", headers={"Accept": "text/html"})
        assert browser.status_code == 401 and 'name="token"' in browser.text
        assert client.get("/healthz").status_code == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/", "/jobs", "/failures", "/jobs/1", "/metrics"):
            response = client.get(path, headers=auth)
            assert response.status_code == 200, path
            seen.append(response.text)
        bad_login = client.post("/login", data={"token": "nope", "next": "/"})
        assert bad_login.status_code == 401
        assert "crystal_watchd_session" not in bad_login.headers.get("set-cookie", "")
        login = client.post("/login", data={"token": TOKEN, "next": "/jobs"})
        assert login.status_code == 303 and login.headers["location"] == "/jobs"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = client.get("/jobs")  # the client keeps the cookie
        assert page.status_code == 200 and "a.jpg" in page.text
        seen.append(page.text)
        assert client.get("/thumbs/1/after.jpg").headers["content-type"] == "image/jpeg"
    assert d.stop() == 0
    for text in [*seen, d.text()]:
        assert TOKEN not in text
        assert FAKE_KEY not in text


def test_posts_need_the_form_token_and_this_origin(tmp_path, daemons):
    """A POST without the session's form token, with another session's token, or with a
    foreign Origin is refused with 403 and changes nothing; the right one works."""
    config = web_config(tmp_path)
    d = daemons(config).ready()
    url = page_url(d)
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in/bad.jpg").write_text("not an image")
    d.wait_event("job_failed")
    with httpx.Client(base_url=url, follow_redirects=False) as client, \
            httpx.Client(base_url=url, follow_redirects=False) as other:
        token = form_token(client.get("/failures").text)
        others_token = form_token(other.get("/failures").text)
        assert client.post("/jobs/1/retry").status_code == 403
        assert client.post("/jobs/1/retry", data={"form_token": others_token}).status_code == 403
        foreign = client.post("/jobs/1/retry", data={"form_token": token},
                              headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403
        assert client.post("/resume", data={"form_token": token},
                           headers={"Origin": "null"}).status_code == 403
        assert not d.named("retry_requested") and not d.named("config_reloaded")
        assert json.loads(cli("status", "--json", "--config", str(config)).stdout)[
            "totals"]["failed"] == 1
        ok = client.post("/resume", data={"form_token": token}, headers={"Origin": url.rstrip("/")})
        assert ok.status_code == 303
        d.wait_event("config_reloaded")
    assert d.stop() == 0


def test_routes_take_job_ids_never_paths(tmp_path, daemons):
    """Traversal attempts and unknown ids are 404, whatever the encoding."""
    config = web_config(tmp_path)
    (tmp_path / "secret.txt").write_text("do not serve")
    d = daemons(config).ready()
    url = page_url(d).rstrip("/")
    raw = ["/thumbs/../../etc/passwd", "/thumbs/1/../../../secret.txt",
           "/thumbs/%2e%2e/%2e%2e/etc/passwd", "/thumbs/1/..%2f..%2fsecret.txt",
           "/static/../config.yaml", "/static/..%2fapp.py", "/static/app.py",
           "/thumbs/999/before.jpg", "/jobs/999", "/thumbs/1/before.png", "/etc/passwd"]
    with httpx.Client() as client:
        for path in raw:
            # httpx would normalise the dots away; send the path exactly as written
            request = client.build_request("GET", url + "/")
            request.url = request.url.copy_with(raw_path=path.encode())
            response = client.send(request)
            assert response.status_code == 404, path
            assert "do not serve" not in response.text and "root:" not in response.text
    assert d.stop() == 0


def test_healthz_fails_when_the_journal_is_locked(tmp_path, daemons):
    """Another process holding the journal's write lock makes /healthz answer 503 (the
    daemon could not record a change), and 200 again once it lets go."""
    import sqlite3

    config = web_config(tmp_path)
    d = daemons(config).ready()
    url = page_url(d)
    assert httpx.get(url + "healthz").status_code == 200
    db = sqlite3.connect(tmp_path / "state/journal.sqlite3", timeout=1)
    db.execute("BEGIN IMMEDIATE")
    try:
        response = httpx.get(url + "healthz", timeout=10)
        assert response.status_code == 503
        assert "locked" in response.json()["journal"]
    finally:
        db.rollback()
        db.close()
    assert httpx.get(url + "healthz").json() == {"status": "ok", "journal": "writable",
                                                  "in_flight": 0, "paused": False,
                                                  "fal_reachable": True,
                                                  "fal_unreachable_since": None,
                                                  "waiting_for": None}
    assert d.stop() == 0


def test_metrics_parse_and_match_status_after_a_fal_run(tmp_path, fakefal, fal_daemons,
                                                        tls_files):
    """After a run through the fal backend (fake server), /metrics parses with
    prometheus_client's parser, its job counts, spend, megapixels and submissions agree with
    `status --json`, and neither the fal key nor the page token appears in it."""
    server = fakefal(latency=0.1)
    config = write_config(tmp_path, [
        {"name": "a", "inbox": "in/a", "outbox": "out/a", "scale_factor": 2},
        {"name": "b", "inbox": "in/b", "outbox": "out/b", "scale_factor": 3,
         "incomplete_grace": 0}],
        backend="fal", fal={"timeout": 60}, retry={"attempts": 2, "backoff": 0.2, "max_backoff": 1},
        http={"listen": "127.0.0.1:0", "token": TOKEN})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    url = page_url(d)
    make_image(tmp_path / "in/a/one.png", (30, 20), fmt="PNG")
    make_image(tmp_path / "in/a/two.png", (20, 20), color="blue", fmt="PNG")
    make_image(tmp_path / "in/b/three.png", (16, 10), fmt="PNG")
    (tmp_path / "in/b/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    d.wait_event("job_done", 3)
    d.wait_event("job_failed", 1)
    text = httpx.get(url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert FAKE_KEY not in text and FAKE_KEY.split(":")[1] not in text and TOKEN not in text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    report = json.loads(cli("status", "--json", "--config", str(config)).stdout)
    for folder, entry in report["folders"].items():
        for state in ("queued", "in_flight", "done", "failed", "superseded"):
            key = ("crystal_watchd_jobs", (("folder", folder), ("state", state)))
            assert samples[key] == entry[state], (folder, state)
        spend = samples[("crystal_watchd_spend_dollars_total", (("folder", folder),))]
        assert spend == pytest.approx(entry["spend_total_usd"], abs=1e-9)
    total_mp = sum(v for (name, _), v in samples.items()
                   if name == "crystal_watchd_output_megapixels_total")
    assert total_mp == pytest.approx(report["spend"]["total_megapixels"], abs=1e-9)
    assert report["spend"]["total_usd"] > 0
    submissions = sum(v for (name, _), v in samples.items()
                      if name == "crystal_watchd_submissions_total")
    assert submissions == len(server.submissions) == 3
    assert samples[("crystal_watchd_queue_depth", ())] == report["totals"]["queued"] == 0
    assert samples[("crystal_watchd_account_paused", ())] == 0
    assert samples[("crystal_watchd_folder_watch_mode", (("folder", "a"), ("mode", "native")))] == 1
    assert samples[("crystal_watchd_fal_latency_seconds_count", ())] == 3
    assert samples[("crystal_watchd_job_duration_seconds_count", (("outcome", "done"),))] == 3
    assert d.stop() == 0
    assert TOKEN not in d.text()


def test_account_pause_shows_on_the_page_and_resume_lifts_it(tmp_path, fakefal, fal_daemons,
                                                            tls_files):
    """A refused account shows as paused (page and the account_paused gauge); once the
    account works again, Resume on the page lifts the pause and the file is processed."""
    from fakefal import Faults

    server = fakefal(faults=Faults(locked=True))
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal",
                          fal={"timeout": 60}, http={"listen": "127.0.0.1:0"})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    url = page_url(d)
    make_image(tmp_path / "in/a.png", (10, 10), fmt="PNG")
    d.wait_event("account_paused")
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        page = client.get("/")
        assert "Submissions are paused" in page.text and ">Resume</button>" in page.text
        assert "crystal_watchd_account_paused 1.0" in client.get("/metrics").text
        server.faults.locked = False
        client.post("/resume", data={"form_token": form_token(page.text)})
        d.wait_event("job_done")
        wait_for(lambda: "nothing is paused" in client.get("/").text, 10, "pause lifted")
    assert d.stop() == 0


def test_retries_are_counted_by_reason(tmp_path, fakefal, fal_daemons, tls_files):
    """Every retry the daemon schedules (one log line each) is one increment of
    crystal_watchd_retries_total with the error kind as its reason; the job's attempts show
    in the duration histogram as retry and then failed."""
    from fakefal import Faults

    server = fakefal(latency=0.05, faults=Faults(app_error=1.0))
    config = write_config(tmp_path, [{"inbox": "in", "outbox": "out"}], backend="fal",
                          fal={"timeout": 60}, retry={"attempts": 3, "backoff": 0.1,
                                                      "max_backoff": 0.2},
                          http={"listen": "127.0.0.1:0"})
    d = fal_daemons(config, fal_env(server, tls_files)).ready()
    url = page_url(d)
    make_image(tmp_path / "in/a.png", (10, 10), fmt="PNG")
    d.wait_event("job_failed", timeout=60)
    scheduled = d.named("job_retry_scheduled")
    assert len(scheduled) == 2
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(httpx.get(url + "metrics").text)
               for s in family.samples}
    reason = scheduled[0]["error"]
    assert samples[("crystal_watchd_retries_total", (("reason", reason),))] == 2
    assert samples[("crystal_watchd_job_duration_seconds_count", (("outcome", "retry"),))] == 2
    assert samples[("crystal_watchd_job_duration_seconds_count", (("outcome", "failed"),))] == 1
    assert d.stop() == 0


# -- the page answers only to its own host names (DNS rebinding) -------------------------------

FOREIGN = "rebind.attacker.example"
GETS = ("/", "/jobs", "/failures", "/jobs/1", "/thumbs/1/before.jpg", "/thumbs/1/after.jpg",
        "/metrics", "/healthz")


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def events_status(client: httpx.Client, headers: dict[str, str]) -> int:
    """The status of /events without waiting for the stream to end."""
    with client.stream("GET", "/events", headers=headers) as response:
        return response.status_code


def test_foreign_host_is_refused_everywhere_and_own_names_answered(tmp_path, daemons):
    """With the default page settings, a request naming a foreign Host (what a browser
    sends after DNS rebinding) gets 421 on every page, picture, stream and action, even with
    a valid form token and an Origin that matches that Host, and changes nothing; the same
    requests for 127.0.0.1, localhost and [::1] with the listening port are answered (and a
    loopback name with a forwarded port too). The
    refusal is logged once (with the host), not once per request; X-Forwarded-Host is not
    believed from a peer that is not a trusted proxy."""
    config = web_config(tmp_path)
    d = daemons(config).ready()
    url = page_url(d)
    port = port_of(url)
    make_image(tmp_path / "in/client-portrait.jpg", (60, 40))
    d.wait_event("job_done")
    (tmp_path / "in/bad.jpg").write_text("not an image")  # a failure: its page has a form
    d.wait_event("job_failed")
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        token = form_token(client.get("/failures").text)
        foreign = {"Host": f"{FOREIGN}:{port}"}
        for path in GETS:
            response = client.get(path, headers=foreign)
            assert response.status_code == 421, path
            assert "client-portrait" not in response.text and response.content[:2] != b"\xff\xd8"
        assert events_status(client, foreign) == 421
        for path in ("/jobs/2/retry", "/resume"):
            response = client.post(path, data={"form_token": token},
                                   headers={**foreign, "Origin": f"http://{FOREIGN}:{port}"})
            assert response.status_code == 421, path
        # a foreign Host dressed up with X-Forwarded-Host by a peer nobody trusts
        dressed = client.get("/jobs", headers={**foreign, "X-Forwarded-Host": f"127.0.0.1:{port}"})
        assert dressed.status_code == 421
        assert client.get("/", headers={"Host": f"127.0.0.2:{port}"}).status_code == 421
        assert not d.named("retry_requested") and not d.named("resume_requested")

        for own in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            headers = {"Host": own}
            for path in GETS:
                response = client.get(path, headers=headers)
                assert response.status_code == 200, (own, path)
            assert "client-portrait" in client.get("/jobs", headers=headers).text
            assert client.get("/thumbs/1/after.jpg", headers=headers).content[:2] == b"\xff\xd8"
            assert events_status(client, headers) == 200
            origin = {**headers, "Origin": f"http://{own}"}
            retry = client.post("/jobs/1/retry", data={"form_token": token}, headers=origin)
            assert retry.status_code == 409, own  # answered: the job is done, not failed
            resume = client.post("/resume", data={"form_token": token}, headers=origin)
            assert resume.status_code == 303, own
        # a forwarded port (SSH tunnel, a container's published port) is still loopback
        assert client.get("/jobs", headers={"Host": "localhost:18765"}).status_code == 200
        ignored = client.get("/", headers={"Host": f"127.0.0.1:{port}",
                                           "X-Forwarded-Host": FOREIGN})
        assert ignored.status_code == 200  # not from a trusted proxy: Host alone counts
    wait_for(lambda: len(d.named("resume_requested")) == 3, 10, "three resumes")
    refused = d.named("http_host_refused")
    assert len(refused) == 1 and refused[0]["host"] == f"{FOREIGN}:{port}"
    assert d.stop() == 0


def test_allowed_hosts_and_a_trusted_proxy(tmp_path, daemons):
    """Names in http.allowed_hosts are answered (without a port: any port; with one: only
    that port); X-Forwarded-Host is believed from a trusted proxy, so a proxy may forward an
    allowed name but not a foreign one; `check` shows the allowed hosts."""
    config = web_config(tmp_path, allowed_hosts=["Photos.LAN", "upscaler.example.lan:8443"],
                        trusted_proxies=["127.0.0.0/8"])
    checked = cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["http"]["allowed_hosts"] == [
        "photos.lan", "upscaler.example.lan:8443"]
    d = daemons(config).ready()
    url = page_url(d)
    port = port_of(url)
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in/bad.jpg").write_text("not an image")  # a failure: its page has a form
    d.wait_event("job_failed")
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        def status(host: str, **extra: str) -> int:
            return client.get("/jobs", headers={"Host": host, **extra}).status_code

        assert status(f"photos.lan:{port}") == 200
        assert status("photos.lan") == 200
        assert status("upscaler.example.lan:8443") == 200
        assert status("upscaler.example.lan") == 421
        assert status(f"upscaler.example.lan:{port}") == 421
        assert status(f"{FOREIGN}:{port}") == 421
        # the proxy (this very machine, trusted) connects to 127.0.0.1:PORT
        assert status(f"127.0.0.1:{port}", **{"X-Forwarded-Host": "photos.lan"}) == 200
        assert status(f"127.0.0.1:{port}", **{"X-Forwarded-Host": FOREIGN}) == 421
        # the page's Origin check compares with the forwarded name too
        token = form_token(client.get("/failures", headers={"Host": "photos.lan"}).text)
        behind = {"Host": f"127.0.0.1:{port}", "X-Forwarded-Host": "photos.lan"}
        assert client.post("/jobs/1/retry", data={"form_token": token},
                           headers={**behind, "Origin": f"http://127.0.0.1:{port}"}
                           ).status_code == 403
        assert client.post("/jobs/1/retry", data={"form_token": token},
                           headers={**behind, "Origin": "https://photos.lan"}).status_code == 303
    assert d.stop() == 0


def ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_page_on_ipv6_loopback_answers_to_its_address(tmp_path, daemons):
    """Listening on [::1]: a request to http://[::1]:PORT/ (the Host a browser sends) is
    answered and a foreign Host on the same connection is refused."""
    config = web_config(tmp_path, listen="[::1]:0")
    d = daemons(config).ready()
    url = page_url(d)
    assert url.startswith("http://[::1]:")
    assert httpx.get(url + "jobs").status_code == 200
    assert httpx.get(url + "jobs", headers={"Host": FOREIGN}).status_code == 421
    assert d.stop() == 0


def test_bad_allowed_hosts_and_proxies_name_the_key(tmp_path):
    """A URL or a path in allowed_hosts and a non-address in trusted_proxies exit 78 naming
    file, line and key."""
    config = web_config(tmp_path, allowed_hosts=["https://photos.lan/"],
                        trusted_proxies=["proxy.lan"])
    result = cli("check", "--config", str(config))
    assert result.returncode == 78
    assert re.search(r":\d+: http\.allowed_hosts: item 1 must be a host name or HOST:PORT "
                     r"without a scheme", result.stderr)
    assert re.search(r":\d+: http\.trusted_proxies: item 1 must be an IP address or network",
                     result.stderr)
