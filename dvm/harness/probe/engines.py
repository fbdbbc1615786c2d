"""Engine facts for the probe: what each engine was built with, and whether it really runs.

"Usable" is proven by a tiny inference (1.5 s of a quiet tone) in a child process, so a driver
crash cannot take the probe down; results are cached per (platform id, engine, engine version,
device) in ``DVM_HOME/cache/probe-engines.json``. Run as a module to do one check:
``python -m dvm.harness.probe.engine_check ENGINE DEVICE MODEL [GPU_INDEX]`` (engine_check.py) prints one JSON line.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dvm import paths
from dvm import cudalibs
from dvm.harness.procout import last_line
from dvm.harness.wcpp_text import parse_system_info

CACHE_SCHEMA = 1
CHECK_TIMEOUT_S = 300
# whisper.cpp's system-info CPU names -> probe cpu.flags keys
GGML_CPU_FEATURES = {
    "SSE3": "sse3", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512_vbmi", "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8", "NEON": "neon", "FP16_VA": "fp16", "DOTPROD": "dotprod",
    "MATMUL_INT8": "i8mm", "SVE": "sve", "SME": "sme",
}
# ggml backend registry name -> probe device key
GGML_GPU_BACKENDS = {"CUDA": "cuda", "Vulkan": "vulkan", "MTL": "metal", "ROCm": "rocm", "MUSA": "musa"}
GGML_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
REBUILD = {
    "cuda": "rebuild: GGML_CUDA=1 pip install --force-reinstall --no-binary pywhispercpp pywhispercpp",
    "vulkan": "rebuild: GGML_VULKAN=1 pip install --force-reinstall --no-binary pywhispercpp pywhispercpp",
    "metal": "Metal is built by default on macOS only",
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_entry(status: str, reason: str | None = None, **extra: Any) -> dict:
    """status: usable | failed | unavailable | not-verified; ``usable`` is None until proven either way."""
    usable = {"usable": True, "failed": False, "unavailable": False}.get(status)
    entry = {"status": status, "usable": usable, "reason": reason, "seconds": None, "cached": False,
             "checked_at": None, "model": None, "backend": None}
    entry.update(extra)
    return entry


# ----------------------------------------------------------------------------- whisper.cpp (pywhispercpp)


def _loaded_libraries() -> list[str]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in maps.splitlines() if "/" in line})


def _ggml_library() -> str | None:
    """Path of the libggml that _pywhispercpp loaded (holds the backend registry)."""
    pattern = re.compile(r"(^|[/\\])(lib)?ggml(-[0-9a-f]{8})?\.(so|dylib|dll)([.\d]*)$")
    for path in _loaded_libraries():
        if pattern.search(path):
            return path
    try:
        import _pywhispercpp  # noqa: PLC0415 - native bindings, optional

        root = Path(_pywhispercpp.__file__).parent
    except ImportError:
        return None
    for folder in (root / "pywhispercpp" / ".dylibs", root / ".dylibs", root / "pywhispercpp.libs", root):
        for candidate in sorted(folder.glob("*ggml*")) if folder.is_dir() else []:
            if pattern.search(str(candidate)):
                return str(candidate)
    return None


def ggml_registry() -> dict | None:
    """Backends and devices in whisper.cpp's ggml registry (through ctypes), or None."""
    path = _ggml_library()
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.ggml_backend_reg_count.restype = ctypes.c_size_t
        lib.ggml_backend_reg_get.restype = ctypes.c_void_p
        lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_reg_name.restype = ctypes.c_char_p
        lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(lib, name).restype = ctypes.c_char_p
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        backends = [lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode()
                    for i in range(lib.ggml_backend_reg_count())]
        devices = []
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            devices.append({"name": lib.ggml_backend_dev_name(dev).decode(errors="replace"),
                            "description": lib.ggml_backend_dev_description(dev).decode(errors="replace"),
                            "type": GGML_DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "other")})
        return {"backends": backends, "devices": devices}
    except (OSError, AttributeError):
        return None


def _whisper_cpp_version() -> str | None:
    for path in _loaded_libraries():
        match = re.search(r"libwhisper[^/]*\.so\.(\d+\.\d+\.\d+)$", path)
        if match:
            return match.group(1)
    try:
        import _pywhispercpp  # noqa: PLC0415 - native bindings, optional

        for candidate in Path(_pywhispercpp.__file__).parent.rglob("libwhisper*"):
            match = re.search(r"(\d+\.\d+\.\d+)", candidate.name)
            if match:
                return match.group(1)
    except (ImportError, OSError):
        pass
    return None


def whispercpp_info(cpu_flags: dict[str, bool]) -> dict:
    info: dict = {"available": False, "reason": None, "package": "pywhispercpp", "version": _version("pywhispercpp"),
                  "whisper_cpp_version": None, "system_info": None, "features": {}, "backends": [],
                  "ggml_devices": [], "cpu_features_unused": [], "devices": {}}
    try:
        import _pywhispercpp  # noqa: PLC0415 - native bindings, optional

        info["system_info"] = _pywhispercpp.whisper_print_system_info().strip()
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native build
        info["reason"] = f"pywhispercpp not importable ({exc}): pip install pywhispercpp"
        return info
    info["available"] = True
    info["whisper_cpp_version"] = _whisper_cpp_version()
    info["features"] = parse_system_info(info["system_info"])
    registry = ggml_registry()
    if registry:
        info["backends"], info["ggml_devices"] = registry["backends"], registry["devices"]
    else:
        info["backends"] = [s for s in info["features"] if s != "WHISPER"]
    built_cpu = info["features"].get("CPU", {})
    info["cpu_features_unused"] = sorted(
        key for name, key in GGML_CPU_FEATURES.items() if cpu_flags.get(key) and built_cpu.get(name) != "1"
    )
    return info


# ----------------------------------------------------------------------------- faster-whisper (CTranslate2)


def fasterwhisper_info() -> dict:
    info: dict = {"available": False, "reason": None, "package": "faster-whisper",
                  "version": _version("faster-whisper"),
                  "ctranslate2_version": None, "compute_types": {"cpu": [], "cuda": []}, "cuda_device_count": 0,
                  "cuda_error": None, "cuda_libraries": None, "devices": {}}
    try:
        import ctranslate2  # noqa: PLC0415 - optional engine runtime
    except Exception as exc:  # noqa: BLE001 - reported as the reason in the result
        info["reason"] = f"ctranslate2 not importable ({exc}): pip install faster-whisper"
        return info
    if info["version"] is None:
        info["reason"] = "faster-whisper is not installed: pip install faster-whisper"
    info["available"] = info["version"] is not None
    info["ctranslate2_version"] = ctranslate2.__version__
    info["compute_types"]["cpu"] = sorted(ctranslate2.get_supported_compute_types("cpu"))
    try:
        info["cuda_device_count"] = int(ctranslate2.get_cuda_device_count())
        if info["cuda_device_count"]:
            info["compute_types"]["cuda"] = sorted(ctranslate2.get_supported_compute_types("cuda"))
        else:
            ctranslate2.get_supported_compute_types("cuda")
    except Exception as exc:  # noqa: BLE001 - CTranslate2 says why CUDA is out
        info["cuda_error"] = str(exc)
    info["cuda_libraries"] = cudalibs.report()
    return info


# ----------------------------------------------------------------------------- the check (parent side)


def check_in_child(engine: str, device: str, model: str, gpu_index: int = 0, expect_backend: str | None = None,
                   timeout: float = CHECK_TIMEOUT_S) -> dict:
    """Run one check in a child process and turn its outcome into a device entry."""
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    if engine == "faster-whisper" and device != "cpu":
        env = cudalibs.child_env(env)  # cuBLAS/cuDNN from pip's NVIDIA wheels, as bench cells get them
    cmd = [sys.executable, "-m", "dvm.harness.probe.engine_check", engine, device, str(model), str(gpu_index)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return device_entry("failed", f"test inference on {device} did not finish in {timeout:.0f} s", model=str(model))
    outcome = next((json.loads(line) for line in reversed(proc.stdout.splitlines()) if line.startswith("{")), None)
    if outcome is None:
        why = f"test inference crashed (exit {proc.returncode}): {last_line(proc.stderr, limit=200)}"
        return device_entry("failed", why, model=str(model))
    if not outcome["ok"]:
        return device_entry("failed", f"test inference failed: {outcome['error'][:300]}", model=str(model))
    backend = None
    if engine == "whispercpp" and device != "cpu":
        used = re.findall(r"whisper_backend_init_gpu: using (\S+) backend", proc.stderr)
        backend = used[-1] if used else None
        if not backend or (expect_backend and not backend.startswith(expect_backend)):
            why = "no GPU found" if not backend else f"it picked {backend}"
            return device_entry("failed", f"whisper.cpp ran on the CPU instead ({why})", model=str(model),
                                seconds=outcome["seconds"])
    return device_entry("usable", None, seconds=outcome["seconds"], model=str(model), backend=backend or device)


def model_path_for(engine: str) -> tuple[str | None, str | None]:
    """(path, None) of the default model for an engine, or (None, reason). Resolved lazily."""
    name = {"whispercpp": "default_ggml_path", "faster-whisper": "default_ct2_dir"}[engine]
    try:
        from dvm.harness import models  # noqa: PLC0415 - models load only when a default model path is asked for

        path = Path(getattr(models, name)())
    except ImportError as exc:
        return None, f"model registry not available ({exc})"
    except AttributeError:
        return None, f"dvm.harness.models has no {name}() yet"
    except Exception as exc:  # noqa: BLE001 - DvmError and friends carry the user's next step
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not path.exists():
        return None, f"default model missing at {path}"
    return str(path), None


# ----------------------------------------------------------------------------- cache


def cache_path() -> Path:
    return paths.dvm_home() / "cache" / "probe-engines.json"


def load_cache(path: Path | None = None) -> dict[str, dict]:
    try:
        data = json.loads((path or cache_path()).read_text())
    except (OSError, ValueError):
        return {}
    return data.get("entries", {}) if data.get("schema_version") == CACHE_SCHEMA else {}


def save_cache(entries: dict[str, dict], path: Path | None = None) -> None:
    path = path or cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"schema_version": CACHE_SCHEMA, "entries": entries}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs a re-check next time


def cache_key(platform_id: str, engine: str, version: str, device: str) -> str:
    return f"{platform_id}|{engine}|{version}|{device}"


# ----------------------------------------------------------------------------- putting it together


def _whispercpp_plan(info: dict, accel: dict) -> dict[str, tuple[str, Any]]:
    """device -> ("check", (gpu_index, backend prefix)) or ("entry", device entry)."""
    plan: dict[str, tuple[str, Any]] = {"cpu": ("check", (0, None))}
    built = {GGML_GPU_BACKENDS[b] for b in info["backends"] if b in GGML_GPU_BACKENDS}
    gpus = [d for d in info["ggml_devices"] if d["type"] in ("gpu", "igpu")]
    for device in sorted({"cuda", "vulkan", "metal"} | built):
        prefix = next((k for k, v in GGML_GPU_BACKENDS.items() if v == device), device)
        if device not in built:
            why = f"pywhispercpp {info['version']} was built without {prefix if device != 'metal' else 'Metal'}"
            plan[device] = ("entry", device_entry("unavailable", f"{why}; {REBUILD.get(device, 'rebuild with it')}"))
            continue
        machine = accel.get(device) or {}
        index = next((i for i, d in enumerate(gpus) if d["name"].startswith(prefix)), None)
        if index is None:
            why = machine.get("reason") or f"whisper.cpp's {prefix} backend lists no GPU"
            if device == "vulkan" and machine.get("note"):
                why = machine["note"]
            plan[device] = ("entry", device_entry("unavailable", f"no {prefix} device: {why}"))
        else:
            plan[device] = ("check", (index, prefix))
    return plan


def _fasterwhisper_plan(info: dict, accel: dict) -> dict[str, tuple[str, Any]]:
    plan: dict[str, tuple[str, Any]] = {"cpu": ("check", (0, None))}
    error = info.get("cuda_error") or ""
    libraries = info.get("cuda_libraries") or {}
    if info["cuda_device_count"] and libraries.get("missing"):
        why = f"CTranslate2 {info['ctranslate2_version']} opens {', '.join(libraries['required'])}; {libraries['hint']}"
        plan["cuda"] = ("entry", device_entry("unavailable", why))
    elif info["cuda_device_count"]:
        plan["cuda"] = ("check", (0, None))
    elif "not compiled with CUDA" in error or "CUDA support" in error:
        why = ("CTranslate2 was built without CUDA (its aarch64 and macOS wheels are CPU-only; "
               "the Linux x86-64 wheel has CUDA 12)")
        plan["cuda"] = ("entry", device_entry("unavailable", why))
    else:
        why = (accel.get("cuda") or {}).get("reason") or error or "CTranslate2 sees no CUDA device"
        if libraries.get("missing"):
            why += f"; and with one it would need {libraries['hint']}"
        plan["cuda"] = ("entry", device_entry("unavailable", f"no CUDA device: {why}"))
    return plan


def engines_section(platform_id: str, cpu_flags: dict[str, bool], accel: dict, check_engines: bool = True,
                    use_cache: bool = True, model_for: Callable[[str], tuple[str | None, str | None]] | None = None,
                    checker: Callable[..., dict] | None = None, cache_file: Path | None = None) -> dict:
    model_for = model_for or model_path_for
    checker = checker or check_in_child
    whisper, faster = whispercpp_info(cpu_flags), fasterwhisper_info()
    engines = {"whispercpp": whisper, "faster-whisper": faster}
    versions = {
        "whispercpp": f"{whisper['version']}+whisper.cpp-{whisper['whisper_cpp_version']}+"
                      f"{hashlib.sha1((whisper['system_info'] or '').encode()).hexdigest()[:8]}",
        "faster-whisper": f"{faster['version']}+ctranslate2-{faster['ctranslate2_version']}",
    }
    cache = load_cache(cache_file)
    dirty = False
    for name, info in engines.items():
        if not info["available"]:
            info["devices"] = {"cpu": device_entry("unavailable", info["reason"])}
            continue
        plan = (_whispercpp_plan if name == "whispercpp" else _fasterwhisper_plan)(info, accel)
        models: dict[str, tuple[str | None, str | None]] = {}
        for device, (kind, detail) in plan.items():
            if kind == "entry":
                info["devices"][device] = detail
                continue
            key = cache_key(platform_id, name, versions[name], device)
            if use_cache and key in cache:
                info["devices"][device] = {**device_entry("not-verified"), **cache[key], "cached": True}
                continue
            if not check_engines:
                why = "not checked in this run (engine checks skipped)"
                info["devices"][device] = device_entry("not-verified", why)
                continue
            if name not in models:
                models[name] = model_for(name)
            path, why = models[name]
            if path is None:
                info["devices"][device] = device_entry("not-verified", f"no test model: {why}")
                continue
            gpu_index, prefix = detail
            entry = checker(name, device, path, gpu_index, prefix)
            entry["checked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            info["devices"][device] = entry
            if entry["status"] in ("usable", "failed"):
                cache[key] = {k: v for k, v in entry.items() if k != "cached"}
                dirty = True
    if dirty:
        save_cache(cache, cache_file)
    return engines

