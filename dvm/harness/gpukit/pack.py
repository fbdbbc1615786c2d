"""Packing, on this machine, what the GPU machine lacks: the built ``cuda`` variant, wheels of the
pure-Python and small native dependencies it has no copy of, ggml models (f16; q8_0 is made there
with whisper-quantize), and the clips as 16 kHz WAV (FLAC needs PyAV, 40 MB, which stays here).

The result is ``OUT/index.json`` + ``OUT/part-NN`` files (parts.py), each small enough to travel
beside the working tree in one device call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import wave
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness.gpukit import parts
from dvm.harness.variants import registry
from dvm.harness.procout import last_line

# Present on the lent machines' image (KINDS.md's package list): numpy, rich, regex, click, requests,
# tqdm, pandas, matplotlib, py-cpuinfo, nvidia-ml-py. What dvm's harness needs beyond those:
DEVICE_WHEELS = [registry.SDIST, "jiwer>=4.0", "rapidfuzz>=3", "whisper-normalizer>=0.1.12", "indic-numtowords",
                 "more-itertools", "text2num", "platformdirs>=4.2"]
# faster-whisper on the GPU machine needs these too (about 85 MB): only with --faster-whisper
FASTER_WHISPER_WHEELS = ["faster-whisper>=1.2.1,<2", "ctranslate2>=4.5", "av>=14", "onnxruntime>=1.14"]
DEFAULT_TIERS = ["tts", "real", "silence", "long"]
PART_MB = 30
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_31_x86_64", "manylinux_2_34_x86_64"]


def download_wheels(specs: list[str], python_version: str, dest: Path) -> list[str]:
    """Wheels (no sdists) for CPython ``python_version`` on x86-64 Linux, without their dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    tag = python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", tag, "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none",
               *[arg for p in PLATFORMS for arg in ("--platform", p)], "--platform", "any", "-d", str(dest), *specs]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DvmError(f"pip could not download wheels for CPython {python_version}: {last_line(result.stderr)}")
    return sorted(p.name for p in dest.glob("*.whl"))


def write_clips(clips_dir: Path, tiers: list[str], dest: Path) -> int:
    """The chosen tiers' clips as 16 kHz mono 16-bit WAV, tier folders and manifests kept; returns the count."""
    from dvm.harness import clips as clipsmod  # noqa: PLC0415 - numpy and PyAV load only when packing clips
    from dvm.harness.audio import load_audio, write_wav  # noqa: PLC0415 - as above

    chosen = [c for c in clipsmod.load_clips(clips_dir) if c.tier in tiers]
    if not chosen:
        raise DvmError(f"no clips of tiers {', '.join(tiers)} in {clips_dir}")
    by_folder: dict[Path, list[dict]] = {}
    for clip in chosen:
        source = Path(clip.path)
        folder = dest / source.parent.relative_to(clips_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = source.with_suffix(".wav").name
        if _plain_wav(source):  # 16 kHz mono 16-bit already (the harness's WAVs): the same bytes
            shutil.copyfile(source, folder / name)
        else:
            write_wav(folder / name, load_audio(source))
        entry = {k: v for k, v in _manifest_entry(source.parent, clip.id).items() if k != "path"}
        entry["file"] = name
        by_folder.setdefault(folder, []).append(entry)
    for folder, entries in by_folder.items():
        (folder / "manifest.json").write_text(json.dumps(entries, indent=1, ensure_ascii=False))
    return len(chosen)


def link_library_copies(folder: Path) -> int:
    """Make ``libX.so`` and ``libX.so.N`` links to ``libX.so.N.M.K`` where pip left identical copies (a wheel
    cannot hold links, so an installed variant has three of each library: 135 MB for the CUDA one). Returns
    the bytes saved."""
    saved = 0
    for full in sorted(folder.glob("lib*.so.*")):
        if full.is_symlink() or not full.is_file():
            continue
        stem, version = full.name.split(".so.", 1)
        if version.count(".") < 1:  # libX.so.N itself: only the longest name is the real file
            continue
        for alias in (folder / f"{stem}.so", folder / f"{stem}.so.{version.split('.')[0]}"):
            if alias.is_file() and not alias.is_symlink() and alias.stat().st_size == full.stat().st_size \
                    and alias.read_bytes() == full.read_bytes():
                saved += alias.stat().st_size
                alias.unlink()
                alias.symlink_to(full.name)
    return saved


def _plain_wav(path: Path) -> bool:
    from dvm.harness.audio import SAMPLE_RATE  # noqa: PLC0415 - numpy loads only when packing clips

    try:
        with wave.open(str(path), "rb") as wav:
            return (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (SAMPLE_RATE, 1, 2)
    except (wave.Error, EOFError, OSError):
        return False


def _manifest_entry(folder: Path, clip_id: str) -> dict:
    entries = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entries = entries["clips"] if isinstance(entries, dict) else entries
    return next(e for e in entries if e.get("id") == clip_id)


def pack(out: Path, models: list[str], variant: str = "cuda", python_version: str = "3.12", tiers: list[str] | None = None,
         clips_dir: Path | None = None, part_mb: int = PART_MB, faster_whisper: bool = False,
         progress=print) -> dict:
    """Build the bundle and cut it into parts under ``out``; returns the index."""
    from dvm.harness import models as modelsmod  # noqa: PLC0415 - the model registry loads numpy

    started = time.time()
    built = registry.installed_variants().get(variant)
    if not built:
        raise DvmError(f"variant {variant!r} is not built; run `nox -s build-whispercpp -- {variant}` first")
    if built.get("python") and built["python"] != python_version:
        raise DvmError(f"variant {variant!r} was built for CPython {built['python']}, not {python_version}; "
                       f"rebuild: python -m dvm.harness.variants build {variant} --python python{python_version}")
    tiers = tiers or DEFAULT_TIERS
    with tempfile.TemporaryDirectory(prefix="dvm-gpukit-") as tmp:
        root = Path(tmp) / "bundle"
        progress(f"variant {variant}: copying {registry.variants_dir() / variant}")
        shutil.copytree(registry.variants_dir() / variant, root / "variants" / variant, symlinks=True)
        saved = link_library_copies(root / "variants" / variant)
        if saved:
            progress(f"  {saved / 1e6:.0f} MB of duplicate library copies (wheels hold no links) made links again")
        specs = DEVICE_WHEELS + (FASTER_WHISPER_WHEELS if faster_whisper else [])
        progress(f"wheels for CPython {python_version}: {' '.join(specs)}")
        wheels = download_wheels(specs, python_version, root / "wheels")
        model_files = []
        for name in models:
            path = modelsmod.ensure_ggml(name, "f16")
            progress(f"model {name} (f16): {path} ({path.stat().st_size / 1e6:.0f} MB)")
            (root / "models").mkdir(exist_ok=True)
            shutil.copyfile(path, root / "models" / path.name)
            model_files.append(path.name)
        source_clips = clips_dir or Path(__file__).resolve().parents[3] / "fixtures" / "audio"
        count = write_clips(source_clips, tiers, root / "clips")
        progress(f"clips: {count} of tiers {', '.join(tiers)} as 16 kHz WAV")
        meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variant": variant, "variant_build": built,
                "python": python_version, "wheels": wheels, "models": model_files, "tiers": tiers, "clips": count,
                "commit": _git_commit()}
        (root / "bundle.json").write_text(json.dumps(meta, indent=2))
        archive = Path(tmp) / "bundle.tar.xz"
        progress("compressing (xz) ...")
        with tarfile.open(archive, "w:xz", preset=1) as tar:
            tar.add(root, arcname="bundle")
        index = parts.split(archive, out, part_mb * 1024 * 1024, meta=meta)
    index["pack_seconds"] = round(time.time() - started, 1)
    (out / parts.INDEX).write_text(json.dumps(index, indent=2))
    progress(f"{len(index['parts'])} parts, {index['bytes'] / 1e6:.1f} MB in {out} ({index['pack_seconds']} s)")
    return index


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError:
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def carry_plan(index: dict, out: Path, tree_bytes: int, limit_bytes: int = 64 * 1024 * 1024) -> list[list[str]]:
    """Which parts go in which device call, given the working tree's size: as many per call as fit."""
    room = limit_bytes - tree_bytes - (out / parts.INDEX).stat().st_size - 256 * 1024
    if room < max(p["bytes"] for p in index["parts"]):
        raise DvmError(f"a part ({max(p['bytes'] for p in index['parts']) / 1e6:.1f} MB) does not fit beside the "
                       f"working tree ({tree_bytes / 1e6:.1f} MB) in one call; pack with a smaller --part-mb")
    calls: list[list[str]] = [[]]
    used = 0
    for part in index["parts"]:
        if used + part["bytes"] > room:
            calls.append([])
            used = 0
        calls[-1].append(part["name"])
        used += part["bytes"]
    return calls


def tree_bytes(repo: Path) -> int:
    """Bytes of what a device call sends: tracked files plus untracked files git does not ignore."""
    result = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise DvmError(f"{repo} is not a git checkout")
    total = 0
    for name in result.stdout.split(b"\0"):
        path = repo / os.fsdecode(name)
        if name and path.is_file():
            total += path.stat().st_size
    return total
