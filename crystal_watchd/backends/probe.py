"""``check --online``: one free call to fal proving the key and the way there.

It asks for a storage upload token (``POST {REST_URL}/storage/auth/token``, the call
fal-client's own upload makes first): authenticated, cheap, and it bills nothing. The same
call, made on the daemon's async client, is the reachability breaker's probe.
"""

from __future__ import annotations

import httpx

from .. import logs
from . import falclient
from .answers import AWAY_STATUSES, retry_after
from .reachability import ProbeAnswer

TIMEOUT = 20.0


def probe(key: str) -> tuple[str, str]:
    """(outcome, what happened in plain words); outcome is ``accepted``, ``refused`` (401,
    403: the key or the account) or ``failed`` (anything else: the way there, fal itself).
    The text never holds the key."""
    logs.register_secret(key)
    url = f"{falclient.rest_url()}/storage/auth/token"
    try:
        answer = httpx.post(url, params={"storage_type": "fal-cdn-v3"}, json={},
                            headers={"Authorization": f"Key {key}"}, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return "failed", logs.scrub(f"cannot reach fal at {url}: {exc or type(exc).__name__}")
    detail = _detail(answer)
    if answer.status_code == 200:
        return "accepted", f"key accepted by fal ({url})"
    if answer.status_code == 401:
        return "refused", ("fal does not accept this key (401: it is wrong, revoked or "
                       f"incomplete; a key looks like KEY_ID:KEY_SECRET){detail}")
    if answer.status_code == 403:
        return "refused", ("fal knows this key but refuses work with it (403: the account is "
                       f"locked or out of balance; see fal.ai/dashboard/billing){detail}")
    return "failed", f"fal answered {answer.status_code} at {url}{detail}"


def _detail(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return logs.scrub(f": fal says \"{detail}\"") if detail else ""


async def probe_reachable(client: httpx.AsyncClient) -> ProbeAnswer:
    """One storage-token call on fal-client's own httpx client (its auth, TLS and proxy
    settings), for the reachability breaker. Any answer but 429/502/503/504 means fal is
    there (a 401/403 is the account's own stop, which the next real call reports)."""
    try:
        answer = await client.post(f"{falclient.rest_url()}/storage/auth/token",
                                   params={"storage_type": "fal-cdn-v3"}, json={},
                                   timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return ProbeAnswer(False, f"cannot reach fal ({type(exc).__name__})")
    if answer.status_code in AWAY_STATUSES:
        return ProbeAnswer(False, f"fal answered {answer.status_code}",
                           retry_after(answer.headers))
    return ProbeAnswer(True)
