"""Files from the pywhispercpp source distribution, which carries the whole whisper.cpp tree
(its JFK sample, its reference model headers, the server/bench/CLI sources).

Fetched with pip from the package index (no other network) and cached per user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import platformdirs

from dvm.errors import DvmError
from dvm.harness.procout import last_line
from dvm.harness.variants.registry import PACKAGE, VERSION


def cache_dir() -> Path:
    env = os.environ.get("DVM_CACHE")
    path = Path(env) if env else Path(platformdirs.user_cache_dir("dvm", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sdist_archive(version: str = VERSION) -> Path:
    """The pywhispercpp sdist tarball, downloaded once with ``pip download``."""
    target = cache_dir() / "sdist"
    archive = target / f"{PACKAGE}-{version}.tar.gz"
    if archive.exists():
        return archive
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", PACKAGE,
                   f"{PACKAGE}=={version}", "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        found = list(Path(tmp).glob(f"{PACKAGE}-{version}.tar.gz"))
        if result.returncode != 0 or not found:
            raise DvmError(f"could not download the {PACKAGE} {version} source distribution with pip: {last_line(result.stderr)}")
        os.replace(found[0], archive)
    return archive


def sdist_file(member: str, version: str = VERSION) -> Path:
    """Extract one file (path relative to the sdist root, e.g. 'whisper.cpp/samples/jfk.wav')."""
    out = cache_dir() / "sdist" / f"{PACKAGE}-{version}" / member
    if out.exists():
        return out
    with tarfile.open(sdist_archive(version)) as tar:
        name = f"{PACKAGE}-{version}/{member}"
        try:
            info = tar.getmember(name)
        except KeyError:
            raise DvmError(f"{member} is not in the {PACKAGE} {version} source distribution") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        extracted = tar.extractfile(info)
        partial = out.with_name(out.name + ".partial")
        partial.write_bytes(extracted.read())
        os.replace(partial, out)
    return out


def unpack(archive: Path, workdir: Path) -> Path:
    """Unpack an sdist tarball with one top directory into ``workdir``; returns that directory."""
    with tarfile.open(archive) as tar:
        tops = {name.split("/", 1)[0] for name in tar.getnames()}
        if len(tops) != 1:
            raise DvmError(f"{archive} is not an sdist with one top directory ({sorted(tops)[:3]})")
        try:
            if hasattr(tarfile, "data_filter"):  # 3.11.4+: refuses absolute paths, '..' and links out of the tree
                tar.extractall(workdir, filter="data")
            else:  # pragma: no cover - older 3.11 patch releases
                tar.extractall(workdir)
        except tarfile.TarError as exc:
            raise DvmError(f"could not unpack {archive}: {exc}") from exc
    return Path(workdir) / tops.pop()


def jfk_wav() -> Path:
    return sdist_file("whisper.cpp/samples/jfk.wav")
