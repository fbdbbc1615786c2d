"""Vulkan facts for the probe: the loader and its physical devices, enumerated through ctypes
(in a child process by default, so a crashing driver stays there), else from ``vulkaninfo --summary``."""

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

from dvm.harness.probe.gpu import _os_name
from dvm.harness.procout import last_line

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
    code = ("import json,sys\nfrom dvm.harness.probe.vulkan import vulkan_enumerate\n"
            "print(json.dumps(vulkan_enumerate(sys.argv[1])))")
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH")]))
    try:
        proc = subprocess.run([sys.executable, "-c", code, loader], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": path}, check=False)
    except subprocess.TimeoutExpired:
        return None, "Vulkan enumeration hung for 30 s (driver problem)"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line), proc.stderr
    return None, f"Vulkan enumeration crashed (exit {proc.returncode}): {last_line(proc.stderr, limit=200)}"


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
