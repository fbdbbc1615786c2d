"""GPU facts for the probe: CUDA (NVML), ROCm and Metal (Vulkan: vulkan.py).

Each ``probe_*`` returns a dict with ``available`` and, whenever it is false, a one-line
``reason`` a user can act on. Inputs (the pynvml module, rocminfo and
system_profiler output) can be injected so recorded inputs are testable anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- CUDA through NVML


def _nvml_error_code(nvml: Any, exc: Exception) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# Longer than 60 lines on purpose: one pass through NVML in the order its calls must be made, with a reason per exit.
def probe_cuda(nvml: Any = None, container: dict | None = None, os_name: str | None = None) -> dict:
    """NVIDIA driver and GPUs through NVML (``pynvml`` from nvidia-ml-py).

    ``status``: ``ok`` | ``unsupported-os`` | ``library-missing`` (nvidia-ml-py not installed) |
    ``no-driver`` (libnvidia-ml missing or driver not loaded) | ``no-device`` | ``error``.
    """
    os_name = os_name or _os_name()
    result: dict = {"available": False, "status": "error", "reason": None, "driver_version": None,
                    "cuda_driver_version": None, "devices": []}
    if os_name == "darwin":
        return {**result, "status": "unsupported-os",
                "reason": "CUDA is not supported on macOS (use Metal: pywhispercpp builds with it by default)"}
    if nvml is None:
        try:
            import pynvml as nvml  # noqa: PLC0415 - optional at run time
        except ImportError:
            return {**result, "status": "library-missing",
                    "reason": "nvidia-ml-py is not installed: pip install nvidia-ml-py"}
    error_type = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
    except error_type as exc:  # type: ignore[misc]
        code = _nvml_error_code(nvml, exc)
        if code == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9):
            reason = "NVIDIA driver installed but not loaded: load the kernel module (modprobe nvidia) or reboot"
        elif code == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12):
            reason = _no_driver_reason(container)
        elif code == getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4):
            return {**result, "status": "no-device",
                    "reason": "no permission to open /dev/nvidia*: add the user to the video group"}
        else:
            return {**result, "reason": f"NVML failed to start: {_text(exc)}"}
        return {**result, "status": "no-driver", "reason": reason}
    try:
        result["driver_version"] = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
            result["cuda_driver_version"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except (error_type, AttributeError, TypeError, ValueError):  # type: ignore[misc]
            pass
        count = int(nvml.nvmlDeviceGetCount())
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            device: dict = {"index": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
                            "memory_total_mib": None, "compute_capability": None}
            try:
                device["memory_total_mib"] = int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
            except error_type:  # type: ignore[misc]
                pass
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                device["compute_capability"] = f"{major}.{minor}"
            except error_type:  # type: ignore[misc]
                pass
            result["devices"].append(device)
    except error_type as exc:  # type: ignore[misc]
        result["reason"] = f"NVML query failed: {_text(exc)}"
        return result
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass
    if not result["devices"]:
        return {**result, "status": "no-device",
                "reason": f"NVIDIA driver {result['driver_version']} is loaded but reports no GPU "
                          "(check nvidia-smi; in a container, set NVIDIA_VISIBLE_DEVICES)"}
    return {**result, "available": True, "status": "ok"}


def _no_driver_reason(container: dict | None) -> str:
    if container and container.get("detected"):
        if container.get("reason"):
            return container["reason"]
        if container.get("nvidia_devices") and not container.get("nvidia_library"):
            return ("NVIDIA devices are passed into this container but libnvidia-ml is missing: start it with "
                    "--gpus all and NVIDIA_DRIVER_CAPABILITIES=compute,utility (nvidia-container-toolkit)")
    return "no NVIDIA driver (libnvidia-ml not found): install the NVIDIA driver if this machine has an NVIDIA GPU"


def _os_name() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    return {"win32": "windows", "cygwin": "windows"}.get(sys.platform, sys.platform)


# ----------------------------------------------------------------------------- ROCm


def parse_rocminfo(text: str) -> list[dict]:
    devices = []
    for block in re.split(r"\n\*{5,}\s*\n", text):
        if re.search(r"^\s*Device Type:\s*GPU\s*$", block, re.M):
            name = re.search(r"^\s*Name:\s*(\S+)\s*$", block, re.M)
            marketing = re.search(r"^\s*Marketing Name:\s*(.+?)\s*$", block, re.M)
            devices.append({"index": len(devices), "name": marketing.group(1) if marketing else None,
                            "gfx": name.group(1) if name else None})
    return devices


def probe_rocm(os_name: str | None = None, root: Path = Path("/"), rocminfo: str | None = None) -> dict:
    os_name = os_name or _os_name()
    result: dict = {"available": False, "reason": None, "version": None, "path": None, "devices": []}
    if os_name != "linux":
        return {**result, "reason": "ROCm is Linux-only (on Windows/macOS use Vulkan or Metal)"}
    rocm = Path(os.environ.get("ROCM_PATH") or root / "opt/rocm")
    kfd = (root / "dev/kfd").exists()
    if not rocm.is_dir():
        extra = "" if kfd else "; no AMD compute driver either (/dev/kfd missing)"
        return {**result, "reason": f"ROCm not installed ({rocm} missing){extra}"}
    result["path"] = str(rocm)
    for candidate in (rocm / ".info/version", rocm / ".info/version-dev"):
        if candidate.exists():
            result["version"] = candidate.read_text().strip()
            break
    if not kfd:
        return {**result, "reason": "ROCm installed but /dev/kfd missing: load the amdgpu driver, or start the "
                                    "container with --device=/dev/kfd --device=/dev/dri"}
    if rocminfo is None:
        exe = shutil.which("rocminfo") or str(rocm / "bin/rocminfo")
        try:
            rocminfo = subprocess.run([exe], capture_output=True, text=True, timeout=20, check=False).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return {**result, "reason": f"rocminfo failed: {exc}"}
    result["devices"] = parse_rocminfo(rocminfo)
    if not result["devices"]:
        why = "ROCm installed but rocminfo lists no GPU agent (check permissions: render/video groups)"
        return {**result, "reason": why}
    return {**result, "available": True}


# ----------------------------------------------------------------------------- Metal


def parse_system_profiler(text: str) -> list[dict]:
    """GPUs from ``system_profiler SPDisplaysDataType -json``."""
    devices = []
    for index, entry in enumerate(json.loads(text).get("SPDisplaysDataType", [])):
        family = entry.get("spdisplays_mtlgpufamilysupport") or entry.get("spdisplays_metal")
        devices.append({"index": index, "name": entry.get("sppci_model") or entry.get("_name"),
                        "cores": _int_or_none(entry.get("sppci_cores")),
                        "metal": family.replace("spdisplays_metal", "Metal ").strip() if family else None,
                        "vendor": (entry.get("spdisplays_vendor") or "").replace("sppci_vendor_", "") or None})
    return devices


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def probe_metal(os_name: str | None = None, arch: str | None = None, profiler_json: str | None = None,
                cpu_brand: str | None = None) -> dict:
    os_name = os_name or _os_name()
    result: dict = {"available": False, "reason": None, "devices": []}
    if os_name != "darwin":
        why = "Metal is macOS-only (inside Docker on a Mac the GPU is not reachable: run natively)"
        return {**result, "reason": why}
    if profiler_json is None:
        try:
            profiler_json = subprocess.run(["system_profiler", "SPDisplaysDataType", "-json"], capture_output=True,
                                           text=True, timeout=20, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            profiler_json = ""
    try:
        result["devices"] = [d for d in parse_system_profiler(profiler_json) if d["metal"]]
    except (ValueError, AttributeError):
        result["devices"] = []
    if not result["devices"] and arch == "arm64":  # every Apple Silicon GPU supports Metal
        result["devices"] = [{"index": 0, "name": cpu_brand, "cores": None, "metal": None, "vendor": "Apple"}]
    if not result["devices"]:
        return {**result, "reason": "no Metal-capable GPU reported by system_profiler"}
    return {**result, "available": True}
