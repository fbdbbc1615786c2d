"""A bundle as numbered parts: an xz tarball cut into files of at most N bytes, with an index of
their sizes and SHA-256 sums, joined again (and checked) on the other side. Standard library only:
this runs on the GPU machine before anything is installed there."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

INDEX = "index.json"
SCHEMA = 1


class PartsError(Exception):
    """A part is missing, damaged, or the index does not describe these parts."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split(archive: Path, out_dir: Path, part_bytes: int, meta: dict | None = None) -> dict:
    """Cut ``archive`` into ``out_dir/part-NN`` files of at most ``part_bytes``; write and return the index."""
    if part_bytes < 1:
        raise PartsError("a part must hold at least one byte")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part-*"):
        old.unlink()
    parts, whole = [], hashlib.sha256()
    with open(archive, "rb") as source:
        number = 1
        while True:
            chunk = source.read(part_bytes)
            if not chunk:
                break
            whole.update(chunk)
            name = f"part-{number:02d}"
            (out_dir / name).write_bytes(chunk)
            parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
            number += 1
    index = {"schema": SCHEMA, "parts": parts, "bytes": sum(p["bytes"] for p in parts), "sha256": whole.hexdigest(),
             "format": "tar.xz", **(meta or {})}
    (out_dir / INDEX).write_text(json.dumps(index, indent=2))
    return index


def read_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / INDEX).read_text())
    except FileNotFoundError:
        raise PartsError(f"{folder / INDEX} is missing: carry it with every part") from None
    except (OSError, ValueError) as exc:
        raise PartsError(f"{folder / INDEX} is unreadable ({exc})") from None
    if index.get("schema") != SCHEMA or not isinstance(index.get("parts"), list):
        raise PartsError(f"{folder / INDEX} is not a dvm bundle index (schema {index.get('schema')!r})")
    return index


def collect(index: dict, source: Path, store: Path) -> tuple[list[str], list[str]]:
    """Copy the parts found in ``source`` into ``store`` after checking them; returns (new, missing).

    A damaged part in ``source`` raises; one already in ``store`` and intact is kept."""
    store.mkdir(parents=True, exist_ok=True)
    new = []
    for part in index["parts"]:
        kept = store / part["name"]
        if kept.is_file() and kept.stat().st_size == part["bytes"] and _sha256(kept) == part["sha256"]:
            continue
        offered = source / part["name"]
        if not offered.is_file():
            continue
        if offered.stat().st_size != part["bytes"] or _sha256(offered) != part["sha256"]:
            raise PartsError(f"{offered} is damaged (size or SHA-256 differs from the index)")
        partial = kept.with_name(kept.name + ".partial")
        shutil.copyfile(offered, partial)
        os.replace(partial, kept)
        new.append(part["name"])
    missing = [p["name"] for p in index["parts"] if not (store / p["name"]).is_file()]
    return new, missing


class _Joined(io.RawIOBase):
    """The parts read back to back as one stream (no second copy of the archive on disk)."""

    def __init__(self, paths: list[Path]):
        self._paths, self._handle = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._handle is None:
                if not self._paths:
                    return 0
                self._handle = open(self._paths.pop(0), "rb")  # closed when exhausted, or by close()
            count = self._handle.readinto(buffer)
            if count:
                return count
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        super().close()


def extract(index: dict, store: Path, target: Path) -> None:
    """Check the joined parts against the index, then unpack them into ``target``."""
    paths = [store / p["name"] for p in index["parts"]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise PartsError(f"cannot unpack: missing {', '.join(missing)}")
    whole = hashlib.sha256()
    with io.BufferedReader(_Joined(paths), buffer_size=1 << 20) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            whole.update(block)
    if whole.hexdigest() != index["sha256"]:
        raise PartsError("the joined parts do not match the index's SHA-256")
    target.mkdir(parents=True, exist_ok=True)
    with io.BufferedReader(_Joined(paths), buffer_size=1 << 20) as stream, tarfile.open(fileobj=stream, mode="r|xz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # pragma: no cover - Python before 3.11.4 / 3.12.0
            tar.extractall(target)
