"""fal-client's private parts, used only through backends/falclient.py, are where and what
that module expects; the installed fal-client is within the pinned range; and nothing else in
the package reaches into fal-client's internals."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import fal_client
import fal_client.client
import httpx
import pytest

from crystal_watchd.backends import falclient

PACKAGE = Path(falclient.__file__).resolve().parents[1]


def _part(module_path: str, attribute: str):
    parts = module_path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return getattr(obj, attribute)
    raise ImportError(module_path)


@pytest.mark.parametrize("module_path,attribute", falclient.PRIVATE_PARTS)
def test_every_private_part_of_fal_client_is_still_there(module_path, attribute):
    """Each private part the adapter names still exists in the installed fal-client."""
    assert _part(module_path, attribute) is not None


def test_the_private_parts_keep_their_shape():
    """The parts behave as the adapter relies on: the queue URL ends in a slash before the
    endpoint, ``_raise_for_status`` raises FalClientHTTPError with status and headers,
    ``_client`` is an awaitable giving an httpx client, ``_parse_status`` turns a status
    JSON into fal-client's Status objects."""
    assert falclient.queue_url(fal_client, "o/a").endswith("/o/a")
    assert falclient.rest_url().startswith("https://")
    answer = httpx.Response(503, json={"detail": "busy", "error_type": "x"},
                            headers={"x-fal-request-id": "r"},
                            request=httpx.Request("POST", "https://q/o/a"))
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        falclient.raise_for_status(fal_client, answer)
    assert raised.value.status_code == 503 and raised.value.response_headers["x-fal-request-id"]
    falclient.raise_for_status(fal_client, httpx.Response(
        200, json={}, request=httpx.Request("GET", "https://q/")))  # no error: no raise
    client_part = inspect.getattr_static(fal_client.AsyncClient, "_client")
    assert isinstance(client_part, property) or hasattr(client_part, "__get__")
    handle = fal_client.client.AsyncRequestHandle(
        request_id="r", response_url="u", status_url="s", cancel_url="c", client=None)
    assert isinstance(falclient.parse_status(handle, {"status": "IN_QUEUE",
                                                      "queue_position": 0}),
                      fal_client.Queued)
    assert isinstance(falclient.parse_status(handle, {"status": "COMPLETED", "logs": None,
                                                      "metrics": {}}),
                      fal_client.Completed)


def test_a_gateway_answer_is_told_from_fals_own():
    """A 504 without x-fal-request-id is the gateway's; with it, or a 500, it is fal's."""
    def answer(status, headers):
        return httpx.Response(status, text="<center>nginx</center>", headers=headers)

    assert falclient.from_gateway(answer(504, {}))
    assert falclient.from_gateway(answer(502, {}))
    assert not falclient.from_gateway(answer(504, {"x-fal-request-id": "r"}))
    assert not falclient.from_gateway(answer(500, {}))


def test_the_installed_fal_client_is_within_the_pinned_range():
    """pyproject pins fal-client >=1.0.3,<2 and declares httpx and httpx-sse; the installed
    fal-client is in that range."""
    text = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"fal-client>=1.0.3,<2"' in text
    assert re.search(r'"httpx>=', text) and re.search(r'"httpx-sse>=', text)
    from importlib.metadata import version

    major, minor, patch = (int(p) for p in version("fal-client").split(".")[:3])
    assert (1, 0, 3) <= (major, minor, patch) < (2, 0, 0)


def test_no_other_module_touches_fal_clients_internals():
    """Outside backends/falclient.py no module of the package names a private part of
    fal-client (its module constants or its underscored functions and attributes), nor
    imports fal_client itself."""
    names = {attribute for _, attribute in falclient.PRIVATE_PARTS}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "falclient.py":
            continue
        text = path.read_text(encoding="utf-8")
        for name in names:
            # ``self._client`` is the daemon's own name too: fal-client's is awaited
            pattern = (r"await [\w.]*\._client\b(?![.(])" if name == "_client"
                       else rf"\.{re.escape(name)}\b")
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
        if "import fal_client" in text:
            offenders.append(f"{path.relative_to(PACKAGE)}: imports fal_client")
    assert not offenders, offenders
