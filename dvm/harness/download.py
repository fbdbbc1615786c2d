"""HTTP download with resume, progress and checksum verification; nothing half-written is left behind."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from dvm.errors import DvmError

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    target: Path,
    checksums: dict[str, str] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``target``.

    The bytes go to ``target.partial`` first; an existing partial file is resumed with an HTTP
    Range request. ``checksums`` maps hashlib algorithm names to expected hex digests; on a
    mismatch the partial file is deleted and DvmError is raised. ``progress(done, total)`` is
    called as bytes arrive.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dvm"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise DvmError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DvmError(f"download of {url} failed: {reason}") from None

    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            done = have
            try:
                with open(partial, "ab" if resumed else "wb") as out:
                    while block := response.read(CHUNK):
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                raise DvmError(f"download of {url} interrupted after {done} bytes ({exc}); run again to resume") from None
            if total is not None and done < total:
                raise DvmError(f"download of {url} truncated: got {done} of {total} bytes; run again to resume")

    for algorithm, expected in (checksums or {}).items():
        actual = file_digest(partial, algorithm)
        if actual.lower() != expected.lower():
            partial.unlink(missing_ok=True)
            raise DvmError(f"checksum mismatch for {target.name}: {algorithm} {actual} != expected {expected}; file removed")
    os.replace(partial, target)
    return target
