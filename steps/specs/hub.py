"""A model's metadata files from the Hugging Face cache or the Hub, never its weights.

The cache is read by its documented layout (`<cache>/models--<org>--<name>/refs/main` names the
snapshot in `snapshots/<commit>/`), and the Hub is asked with one plain HTTP request per file
and a short timeout: no retries and no `huggingface_hub` import (with its HTTP stack that import
alone costs about half a second), so a machine without Hub access learns it at once.
Environment, as Hugging Face tools read it: HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN (or the token
file), HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HUB_TIMEOUT_S = 2.0  # one attempt; a reachable Hub answers a config.json request in well under a second
MAX_METADATA_BYTES = 16 << 20
_TRUE = {"1", "on", "yes", "true"}


class HubUnavailable(Exception):
    """The Hub could not be asked (offline mode, network) or refused (missing or gated repo)."""


class HubUnreachable(HubUnavailable):
    """The Hub did not answer (refused, DNS, timeout, TLS): a later try may succeed."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface"


def cache_dir() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(explicit).expanduser() if explicit else _hf_home() / "hub"


def cached_snapshot(model_id: str) -> Path | None:
    """The cached snapshot folder of `model_id` holding config.json: refs/main's, else the newest."""
    repo = cache_dir() / f"models--{model_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = snapshots / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    if not snapshots.is_dir():
        return None
    found = [s for s in snapshots.iterdir() if (s / "config.json").is_file()]
    return max(found, key=lambda s: s.stat().st_mtime) if found else None


def _token() -> str | None:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token.strip()
    path = Path(os.environ.get("HF_TOKEN_PATH") or _hf_home() / "token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def fetch_json(model_id: str, filename: str, timeout_s: float = HUB_TIMEOUT_S) -> dict[str, Any] | None:
    """`filename` of the repo's main revision from the Hub, parsed; None when the repo lacks it.

    Raises HubUnavailable when the Hub is not asked (HF_HUB_OFFLINE), cannot be reached, or
    refuses the repo (unknown, private or gated: the Hub answers 401/403/404 alike)."""
    import urllib.error
    import urllib.request

    if offline():
        raise HubUnavailable("HF_HUB_OFFLINE is set")
    url = f"{endpoint()}/{model_id}/resolve/main/{filename}"
    headers = {"User-Agent": "slaprof"}
    token = _token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as resp:
            body = resp.read(MAX_METADATA_BYTES)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and exc.headers.get("X-Error-Code") == "EntryNotFound":
            return None  # the repo exists, the file does not
        if exc.code in (401, 403, 404):
            hint = "" if token else "; set HF_TOKEN if it is gated"
            raise HubUnavailable(f"the Hub has no accessible repo {model_id!r} (HTTP {exc.code}{hint})") from None
        raise HubUnavailable(f"the Hub answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeout, TLS
        reason = getattr(exc, "reason", None) or exc
        raise HubUnreachable(f"{endpoint()} is unreachable ({reason})") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise HubUnavailable(f"the Hub's {filename} of {model_id!r} is not JSON") from None
    return data if isinstance(data, dict) else None
