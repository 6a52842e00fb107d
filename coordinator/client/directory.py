"""Where a client connects: a WebSocket URL as given, or the one a coordinator's HTTP address names.

Given `http://HOST:PORT`, the client asks `GET /api/join` before every connection attempt,
so that after its gateway dies it reconnects to a live one (the coordinator answers the
least-loaded gateway, or its own `/ws` when it has none). A `ws://` or `wss://` URL is used
as it is, every time.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

JOIN_PATH = "/api/join"
TIMEOUT_SECONDS = 10.0


class NoEndpoint(OSError):
    """The coordinator could not name an endpoint now (unreachable, or no gateway up): retry later."""


def endpoint(address: str, timeout: float = TIMEOUT_SECONDS) -> str:
    """The WebSocket URL to connect to for `address` (blocking: it may ask the coordinator)."""
    if not address.startswith(("http://", "https://")):
        return address
    url = address.rstrip("/") + JOIN_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise NoEndpoint(f"{url} answered {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise NoEndpoint(f"cannot ask {url}: {exc}") from exc
    found = answer.get("url") if isinstance(answer, dict) else None
    if not isinstance(found, str) or not found.startswith(("ws://", "wss://")):
        raise NoEndpoint(f"{url} named no WebSocket URL")
    return found
