"""GPU facts for the probe: CUDA (NVML), Vulkan (the loader, through ctypes), ROCm and Metal.

Each ``probe_*`` returns a dict with ``available`` and, whenever it is false, a one-line
``reason`` a user can act on. Inputs (the pynvml module, the loader's path, rocminfo and
system_profiler output) can be injected so recorded inputs are testable anywhere.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- CUDA through NVML


def _nvml_error_code(nvml: Any, exc: Exception) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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
        except Exception:  # noqa: BLE001
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


# ----------------------------------------------------------------------------- Vulkan

VK_DEVICE_TYPES = {0: "other", 1: "integrated", 2: "discrete", 3: "virtual", 4: "cpu"}
VK_VENDORS = {0x10DE: "NVIDIA", 0x1002: "AMD", 0x1022: "AMD", 0x8086: "Intel", 0x13B5: "ARM", 0x5143: "Qualcomm",
              0x106B: "Apple", 0x1010: "Imagination", 0x10005: "Mesa", 0x14E4: "Broadcom"}
VK_ERRORS = {-1: "OUT_OF_HOST_MEMORY", -2: "OUT_OF_DEVICE_MEMORY", -3: "INITIALIZATION_FAILED",
             -6: "LAYER_NOT_PRESENT", -7: "EXTENSION_NOT_PRESENT", -9: "INCOMPATIBLE_DRIVER"}
VK_SUMMARY_TYPES = {"discrete_gpu": "discrete", "integrated_gpu": "integrated", "virtual_gpu": "virtual"}
VULKAN_LOADERS = {"linux": ("libvulkan.so.1", "libvulkan.so"), "windows": ("vulkan-1.dll",),
                  "darwin": ("libvulkan.1.dylib", "libvulkan.dylib", "/usr/local/lib/libvulkan.1.dylib",
                             "/opt/homebrew/lib/libvulkan.1.dylib")}


def vk_version(value: int) -> str:
    return f"{(value >> 22) & 0x7F}.{(value >> 12) & 0x3FF}.{value & 0xFFF}"


def vk_driver_version(vendor_id: int, value: int) -> str:
    if vendor_id == 0x10DE:
        return f"{value >> 22}.{(value >> 14) & 0xFF}"
    return vk_version(value)


def find_vulkan_loader(os_name: str | None = None) -> str | None:
    """Name or path of a loadable Vulkan loader, or None."""
    for name in VULKAN_LOADERS.get(os_name or _os_name(), ("libvulkan.so.1",)):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


class _AppInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("pApplicationName", ctypes.c_char_p),
                ("applicationVersion", ctypes.c_uint32), ("pEngineName", ctypes.c_char_p),
                ("engineVersion", ctypes.c_uint32), ("apiVersion", ctypes.c_uint32)]


class _InstanceInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.POINTER(_AppInfo)), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.POINTER(ctypes.c_char_p)), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.POINTER(ctypes.c_char_p))]


class _DeviceProps(ctypes.Structure):
    # The head of VkPhysicalDeviceProperties; the tail (limits, sparse properties) fits in _rest.
    _fields_ = [("apiVersion", ctypes.c_uint32), ("driverVersion", ctypes.c_uint32), ("vendorID", ctypes.c_uint32),
                ("deviceID", ctypes.c_uint32), ("deviceType", ctypes.c_int32), ("deviceName", ctypes.c_char * 256),
                ("pipelineCacheUUID", ctypes.c_uint8 * 16), ("_rest", ctypes.c_uint8 * 4096)]


class _MemoryHeap(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("flags", ctypes.c_uint32)]


class _MemoryProps(ctypes.Structure):
    _fields_ = [("memoryTypeCount", ctypes.c_uint32), ("memoryTypes", ctypes.c_uint32 * 64),
                ("memoryHeapCount", ctypes.c_uint32), ("memoryHeaps", _MemoryHeap * 16)]


def vulkan_enumerate(loader: str) -> dict:
    """Create an instance through the loader and list physical devices (may print loader errors)."""
    lib = ctypes.CDLL(loader)
    lib.vkCreateInstance.restype = ctypes.c_int32
    lib.vkCreateInstance.argtypes = [ctypes.POINTER(_InstanceInfo), ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.vkEnumeratePhysicalDevices.restype = ctypes.c_int32
    lib.vkEnumeratePhysicalDevices.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
    lib.vkGetPhysicalDeviceProperties.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DeviceProps)]
    lib.vkGetPhysicalDeviceMemoryProperties.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MemoryProps)]
    lib.vkDestroyInstance.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    instance_version = None
    if hasattr(lib, "vkEnumerateInstanceVersion"):
        version = ctypes.c_uint32(0)
        if lib.vkEnumerateInstanceVersion(ctypes.byref(version)) == 0:
            instance_version = vk_version(version.value)
    app = _AppInfo(0, None, b"dvm-probe", 1, b"dvm", 1, (1 << 22) | (1 << 12))
    instance = ctypes.c_void_p()
    portability = (ctypes.c_char_p * 1)(b"VK_KHR_portability_enumeration")
    attempts = [(1, 1, portability), (0, 0, None)] if sys.platform == "darwin" else [(0, 0, None)]
    code = -3
    for flags, n_ext, exts in attempts:
        info = _InstanceInfo(1, None, flags, ctypes.pointer(app), 0, None, n_ext, exts)
        code = lib.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
        if code == 0:
            break
    if code != 0:
        return {"ok": False, "vk_result": code, "vk_error": VK_ERRORS.get(code, str(code)),
                "instance_version": instance_version, "devices": []}
    try:
        count = ctypes.c_uint32(0)
        lib.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * max(count.value, 1))()
        lib.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
        devices = []
        for index in range(count.value):
            props, memory = _DeviceProps(), _MemoryProps()
            lib.vkGetPhysicalDeviceProperties(handles[index], ctypes.byref(props))
            lib.vkGetPhysicalDeviceMemoryProperties(handles[index], ctypes.byref(memory))
            local = sum(memory.memoryHeaps[i].size for i in range(min(memory.memoryHeapCount, 16))
                        if memory.memoryHeaps[i].flags & 1)
            devices.append({
                "index": index, "name": props.deviceName.decode(errors="replace"),
                "type": VK_DEVICE_TYPES.get(props.deviceType, "other"), "api_version": vk_version(props.apiVersion),
                "driver_version": vk_driver_version(props.vendorID, props.driverVersion),
                "vendor_id": f"0x{props.vendorID:04x}", "vendor": VK_VENDORS.get(props.vendorID),
                "device_id": f"0x{props.deviceID:04x}", "memory_mib": local // (1024 * 1024) or None,
            })
    finally:
        lib.vkDestroyInstance(instance, None)
    return {"ok": True, "vk_result": 0, "vk_error": None, "instance_version": instance_version, "devices": devices}


def parse_vulkaninfo_summary(text: str) -> list[dict]:
    """Devices from ``vulkaninfo --summary`` (the fallback path)."""
    devices = []
    for index, block in enumerate(re.split(r"\n\s*GPU\d+:\s*\n", "\n" + text)[1:]):
        fields = dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", block, re.M))
        vendor = int(fields.get("vendorID", "0"), 16) if fields.get("vendorID", "").startswith("0x") else 0
        kind = fields.get("deviceType", "").replace("PHYSICAL_DEVICE_TYPE_", "").lower()
        devices.append({
            "index": index, "name": fields.get("deviceName"),
            "type": VK_SUMMARY_TYPES.get(kind, kind or "other"),
            "api_version": fields.get("apiVersion"), "driver_version": fields.get("driverVersion"),
            "vendor_id": fields.get("vendorID"), "vendor": VK_VENDORS.get(vendor),
            "device_id": fields.get("deviceID"), "memory_mib": None,
        })
    return devices


def _enumerate_isolated(loader: str) -> tuple[dict | None, str]:
    """Run vulkan_enumerate in a child process: a crashing driver or loader chatter stays there."""
    code = ("import json,sys\nfrom dvm.harness.probe_gpu import vulkan_enumerate\n"
            "print(json.dumps(vulkan_enumerate(sys.argv[1])))")
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([sys.executable, "-c", code, loader], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": path}, check=False)
    except subprocess.TimeoutExpired:
        return None, "Vulkan enumeration hung for 30 s (driver problem)"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line), proc.stderr
    return None, f"Vulkan enumeration crashed (exit {proc.returncode}): {_last_line(proc.stderr)}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def probe_vulkan(os_name: str | None = None, find_loader: Callable[[str], str | None] | None = None,
                 isolate: bool = True, container: dict | None = None) -> dict:
    os_name = os_name or _os_name()
    result: dict = {"available": False, "reason": None, "note": None, "loader": None, "source": None,
                    "instance_version": None, "devices": []}
    loader = (find_loader or find_vulkan_loader)(os_name)
    if not loader:
        hint = {"linux": "apt-get install libvulkan1 mesa-vulkan-drivers (or your GPU vendor's Vulkan driver)",
                "darwin": "brew install vulkan-loader molten-vk", "windows": "install or update the GPU driver"}
        return {**result, "reason": f"Vulkan loader not found ({VULKAN_LOADERS.get(os_name, ('libvulkan',))[0]}): "
                                    f"{hint.get(os_name, 'install a Vulkan loader')}"}
    result["loader"] = loader
    stderr = ""
    if isolate:
        found, stderr = _enumerate_isolated(loader)
    else:
        try:
            found = vulkan_enumerate(loader)
        except (OSError, AttributeError) as exc:
            found, stderr = None, str(exc)
    if found is None and shutil.which("vulkaninfo"):
        try:
            proc = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True, timeout=30, check=False)
            devices = parse_vulkaninfo_summary(proc.stdout) if proc.returncode == 0 else []
            if devices:
                found = {"ok": True, "vk_error": None, "instance_version": None, "devices": devices}
                result["source"] = "vulkaninfo"
        except (OSError, subprocess.SubprocessError):
            pass
    if found is None:
        return {**result, "reason": stderr or "Vulkan enumeration failed"}
    result["source"] = result["source"] or "loader"
    result["instance_version"] = found.get("instance_version")
    if not found["ok"]:
        if found["vk_error"] == "INCOMPATIBLE_DRIVER":
            env = [k for k in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES") if os.environ.get(k)]
            where = f" (check {', '.join(env)})" if env else ""
            fix = {"darwin": "brew install molten-vk", "windows": "install or update the GPU driver"}.get(
                os_name, "install mesa-vulkan-drivers or your GPU vendor's Vulkan driver")
            reason = f"Vulkan loader found but no Vulkan driver (ICD){where}: {fix}"
        else:
            reason = f"vkCreateInstance failed: VK_ERROR_{found['vk_error']}"
        return {**result, "reason": reason}
    result["devices"] = found["devices"]
    if not result["devices"]:
        dri = " (pass --device /dev/dri to the container)" if container and container.get("detected") else ""
        return {**result, "reason": f"Vulkan driver installed but no physical device{dri}"}
    result["available"] = True
    if all(d["type"] == "cpu" for d in result["devices"]):
        result["note"] = ("only a CPU (software) Vulkan device: fine for testing, much slower than the CPU backend; "
                          "ggml-vulkan skips it unless GGML_VK_VISIBLE_DEVICES=0")
    return result


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
