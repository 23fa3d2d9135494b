"""fal backend pieces that need no server: key lookup, masking, error wording."""

from __future__ import annotations

import pytest

from crystal_watchd import logs
from crystal_watchd.backends import fal, key
from crystal_watchd.config import FalConfig
from crystal_watchd.errors import AccountError, ConfigError, PermanentJobError, RetryableError


def test_key_sources_in_order(tmp_path):
    """key_file wins, then a systemd credential, then FAL_KEY, then FAL_KEY_ID:SECRET."""
    key_file = tmp_path / "k"
    key_file.write_text("from-file\n")
    assert key.read_key(FalConfig(key_file=key_file), {"FAL_KEY": "env"}) == "from-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fal-key").write_text("from-credential")
    assert key.read_key(FalConfig(), {"CREDENTIALS_DIRECTORY": str(creds)}) == "from-credential"
    assert key.read_key(FalConfig(), {"FAL_KEY": " env "}) == "env"
    assert key.read_key(FalConfig(), {"FAL_KEY_ID": "id", "FAL_KEY_SECRET": "s"}) == "id:s"
    with pytest.raises(ConfigError) as info:
        key.read_key(FalConfig(), {})
    assert "--backend local" in str(info.value)
    with pytest.raises(ConfigError):
        key.read_key(FalConfig(key_file=tmp_path / "missing"), {"FAL_KEY": "x"})


def test_key_is_masked_in_repr_and_scrubbed_from_logs():
    """The backend's repr hides the key; any log text containing it is scrubbed."""
    backend = fal.FalBackend(FalConfig(),
                             environ={"FAL_KEY": "secret-id-123456:secret-value-abcdef"})
    assert "secret" not in repr(backend) and "key=***" in repr(backend)
    assert "secret-value-abcdef" not in repr(backend._client)
    line = logs.scrub("auth Key secret-id-123456:secret-value-abcdef and "
                      "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB")
    assert "secret" not in line and "iVBOR" not in line


def test_errors_are_sorted_by_what_to_do():
    """401/403 pause the account, 422 fails with fal's words, 429/5xx retry with Retry-After."""
    backend = fal.FalBackend.__new__(fal.FalBackend)
    detail = [{"loc": ["body", "image_url"], "msg": "Could not load", "type": "image_load_error"}]
    rejected = backend._classify("result", 422, detail, None, {})
    assert isinstance(rejected, PermanentJobError)
    assert rejected.reason == "fal rejected the input: image_url: Could not load"
    locked = backend._classify("submit", 403, "User is locked", None, {})
    assert isinstance(locked, AccountError)
    busy = backend._classify("submit", 429, "slow down", None, {"retry-after": "7"})
    assert isinstance(busy, RetryableError) and busy.delay == 7
    down = backend._classify("status", 503, "x", "runner_scheduling_failure", {})
    assert isinstance(down, RetryableError) and down.kind == "runner_scheduling_failure"
    assert isinstance(backend._classify("status", 404, "gone", None, {}), fal._Gone)


def test_slots_bound_requests_even_when_handed_on_early():
    """Slots never admit more than ``limit`` holders; by default none is handed on early,
    and with ``ahead`` early hand-overs are capped at ``ahead`` more, so hung requests
    cannot pile up at the upscaler."""
    import asyncio

    from crystal_watchd.backends.base import Slots

    assert not Slots(3).try_lend()

    async def main():
        slots = Slots(2, ahead=2)
        await slots.acquire()
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert slots.try_lend() and slots.try_lend() and not slots.try_lend()
        await slots.release()
        await asyncio.wait_for(waiter, 1)
        slots.returned()
        assert slots.try_lend()
        await slots.resize(3)
        third = asyncio.create_task(slots.acquire())
        await asyncio.wait_for(third, 1)
        assert slots.used == 3

    asyncio.run(main())


def test_one_retry_loop_pauses_alike_for_every_call(monkeypatch):
    """The in-place retry loop: a RetryableError waits 0.2 s doubling up to 5 s (or fal's
    Retry-After when longer) and the last attempt's error is raised; a RetryNow starts the
    next attempt without a pause and, when none is left, raises the error it carries; any
    other error is raised at once."""
    import asyncio

    from crystal_watchd.backends import retries

    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(retries.asyncio, "sleep", sleep)

    def failing(*errors):
        queue = list(errors)

        async def once():
            error = queue.pop(0)
            if isinstance(error, BaseException):
                raise error
            return error
        return once

    busy = [RetryableError("busy", kind="http_429") for _ in range(5)]
    late = RetryableError("busy", kind="http_429", delay=7.0)
    assert asyncio.run(retries.retry_in_place("status", failing(*busy, "ok"))) == "ok"
    assert slept == [0.2, 0.4, 0.8, 1.6, 3.2]
    slept.clear()
    last = RetryableError("still busy", kind="http_503")
    with pytest.raises(RetryableError) as info:
        asyncio.run(retries.retry_in_place("status", failing(late, *busy[:4], last)))
    assert info.value is last and slept == [7.0, 0.4, 0.8, 1.6, 3.2]
    slept.clear()
    again = retries.RetryNow(RetryableError("not taken", kind="submit"))
    assert asyncio.run(retries.retry_in_place("submit", failing(again, "id"))) == "id"
    with pytest.raises(RetryableError) as info:
        asyncio.run(retries.retry_in_place("submit", failing(again, again), attempts=2))
    assert info.value is again.error and slept == []
    with pytest.raises(AccountError):
        asyncio.run(retries.retry_in_place("submit", failing(AccountError("no", kind="account"),
                                                             "never")))
    assert slept == []


def test_a_silent_status_stream_gives_way_to_polling(fakefal, tls_files, monkeypatch):
    """A status stream that stays open without a word for STREAM_SILENCE seconds is given
    up for polling, and the finished request is still seen (fal's own status, polled)."""
    import asyncio
    import ssl

    import fal_client
    import httpx
    from conftest import FAKE_KEY
    from fakefal import Faults
    from fal_client.client import AsyncRequestHandle, Completed

    from crystal_watchd.backends import waiting

    monkeypatch.setattr(waiting, "STREAM_SILENCE", 0.5)
    server = fakefal(latency=2.0, faults=Faults(silent_stream=True))
    req = server.submit("clarityai/crystal-upscaler", {"image_url": "data:,x"})
    said: list[tuple[str, dict]] = []

    class Bound:
        def info(self, event, **kw):
            said.append((event, kw))

        debug = info

    async def main():
        trust = ssl.create_default_context(cafile=tls_files["ca"])
        async with httpx.AsyncClient(verify=trust,
                                     headers={"Authorization": f"Key {FAKE_KEY}"}) as client:
            base = f"{server.base_url}/clarityai/crystal-upscaler/requests/{req.id}"
            handle = AsyncRequestHandle(request_id=req.id, response_url=base,
                                        status_url=base + "/status",
                                        cancel_url=base + "/cancel", client=client)

            async def nothing():
                return None

            return await asyncio.wait_for(waiting.wait_until_done(
                fal_client, handle, deadline=float("inf"),
                runtime=waiting.RunTime(), poll=lambda: handle.status(with_logs=True),
                bound=Bound(), nearly_done=nothing, timed_out=nothing), 20)

    status = asyncio.run(main())
    assert isinstance(status, Completed)
    assert [kw["reason"] for e, kw in said if e == "fal_status_stream_fallback"] == ["silent"]
    assert server.calls["stream"] == 1 and server.calls["status"] >= 1


def test_request_list_matching_follows_pages_and_checks_input_time_and_settings():
    """An unanswered submission is found by its data URI's digest (or upload URL), the same
    scale and creativity, and a send time within the clock window, across the list's
    ``cursor``/``has_more`` pages (fal's documented shape); a 403 is a refusal."""
    import asyncio

    import httpx

    from crystal_watchd.backends.platform import Platform, PlatformRefused, identity_of, iso

    uri = "data:image/png;base64,AAAA"
    sent = 1_800_000_000.0
    item = {"json_input": {"image_url": uri, "scale_factor": 2.0, "creativity": 1},
            "sent_at": iso(sent + 3)}
    pages = {None: {"items": [{**item, "request_id": "other-scale",
                               "json_input": {**item["json_input"], "scale_factor": 3.0}},
                              {**item, "request_id": "an-hour-early", "sent_at": iso(sent - 3600)},
                              {**item, "request_id": "other-input",
                               "json_input": {**item["json_input"], "image_url": "data:,b"}},
                              {"request_id": "no-payloads", "sent_at": iso(sent)}],
                    "has_more": True, "next_cursor": "page2"},
             "page2": {"items": [{**item, "request_id": "ours"}], "has_more": False,
                       "next_cursor": None}}
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        if request.headers["Authorization"] != "Key k:s":
            return httpx.Response(403, json={"detail": "forbidden"})
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    async def find(key: str):
        platform = Platform(key, {"FAL_PLATFORM_URL": "https://proxy.example/v1"})
        platform._http = httpx.AsyncClient(transport=httpx.MockTransport(answer),
                                           headers={"Authorization": f"Key {key}"})
        try:
            return await platform.find("clarityai/crystal-upscaler", identity_of(uri), sent, 300,
                                       {"scale_factor": 2, "creativity": 1})
        finally:
            await platform.aclose()

    assert asyncio.run(find("k:s")) == "ours"
    assert [p.get("cursor") for p in seen] == [None, "page2"]
    assert all(p["endpoint_id"] == "clarityai/crystal-upscaler" and p["expand"] == "payloads"
               and int(p["limit"]) <= 100 for p in seen)
    assert identity_of(uri).startswith("sha256:") and uri not in identity_of(uri)
    assert identity_of("https://v3.fal.media/files/x.png") == "https://v3.fal.media/files/x.png"
    with pytest.raises(PlatformRefused):
        asyncio.run(find("wrong"))
