"""The host side of ``dvm probe``: OS, container, memory, and :func:`collect`, which puts the whole
profile together (schema: docs/probe.md), and :func:`platform_id`.

The other facts come from ``cpu`` (CPU, BLAS), ``gpu`` (CUDA, ROCm, Metal), ``vulkan`` and
``engines`` (whisper.cpp and faster-whisper builds, and whether they really run).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dvm
from dvm.harness.probe import cpu as probe_cpu
from dvm.harness.probe import engines as probe_engines
from dvm.harness.probe import gpu as probe_gpu
from dvm.harness.probe import vulkan as probe_vulkan

SCHEMA_VERSION = 1
CONTAINER_MARKERS = (("docker", "docker"), ("kubepods", "kubernetes"), ("containerd", "containerd"),
                     ("libpod", "podman"), ("podman", "podman"), ("lxc", "lxc"), ("garden", "garden"))


def os_name() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    return {"darwin": "darwin", "win32": "windows", "cygwin": "windows"}.get(sys.platform, sys.platform)


# ----------------------------------------------------------------------------- host and container


def detect_container(root: Path = Path("/"), environ: dict[str, str] | None = None) -> dict:
    """Container runtime and whether NVIDIA devices were passed in. ``root`` lets tests fake a filesystem."""
    environ = os.environ if environ is None else environ
    evidence: list[str] = []
    runtime = None
    if (root / ".dockerenv").exists():
        evidence.append("/.dockerenv")
        runtime = "docker"
    containerenv = root / "run/.containerenv"
    if containerenv.exists():
        evidence.append("/run/.containerenv")
        try:
            engine = re.search(r'engine="([a-z]+)', containerenv.read_text())
        except OSError:
            engine = None
        runtime = engine.group(1) if engine else "podman"
    try:
        cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        cgroup = ""
    for marker, name in CONTAINER_MARKERS:
        if re.search(rf"[/:-]{marker}", cgroup):
            evidence.append(f"/proc/1/cgroup mentions {marker}")
            runtime = runtime or name
            break
    if environ.get("container"):
        evidence.append(f"$container={environ['container']}")
        runtime = runtime or environ["container"]
    detected = bool(evidence)
    dev = root / "dev"
    nvidia_devices = sorted(str(p.relative_to(root)) for p in dev.glob("nvidia[0-9]*")) if dev.is_dir() else []
    wsl_gpu = (root / "dev/dxg").exists()
    nvidia_lib = _nvidia_library_present(root)
    result = {"detected": detected, "runtime": runtime if detected else None, "evidence": evidence,
              "nvidia_devices": ["/" + d for d in nvidia_devices], "nvidia_library": nvidia_lib,
              "dri_devices": (root / "dev/dri").is_dir(), "nvidia_access": None, "reason": None}
    if detected:
        result["nvidia_access"] = bool(nvidia_devices or wsl_gpu) and nvidia_lib
        if not nvidia_devices and not wsl_gpu and not nvidia_lib:
            flag = "--device nvidia.com/gpu=all" if runtime == "podman" else "--gpus all"
            result["reason"] = (f"{runtime} container without NVIDIA GPU access (no /dev/nvidia*, no libnvidia-ml): "
                                f"if the host has an NVIDIA GPU, restart with {flag}")
    return result


def _nvidia_library_present(root: Path) -> bool:
    if root == Path("/"):
        return probe_cpu.find_library(("libnvidia-ml.so.1", "libnvidia-ml.so"), "nvidia-ml",
                                      ("/usr/lib/wsl/lib",)) is not None
    dirs = ("usr/lib", "usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib/wsl/lib")
    return any(next((root / d).glob("libnvidia-ml.so*"), None) is not None for d in dirs if (root / d).is_dir())


def _os_release() -> str | None:
    if os_name() == "darwin":
        version = platform.mac_ver()[0]
        return f"macOS {version}" if version else None
    if os_name() == "windows":
        return f"Windows {platform.release()} ({platform.version()})"
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        return None


def _memory_mib() -> int | None:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if match:
            return int(match.group(1)) // 1024
    except OSError:
        pass
    if os_name() == "darwin":
        match = re.search(r"^hw\.memsize:\s*(\d+)", probe_cpu.sysctl_dump(), re.M)
        return int(match.group(1)) // (1024 * 1024) if match else None
    return None


def host_info() -> dict:
    name = os_name()
    kernel = platform.release()
    return {
        "os": name, "os_release": _os_release(), "kernel": kernel,
        "arch": probe_cpu.normalize_arch(platform.machine(), name), "machine": platform.machine(),
        "python": platform.python_version(), "python_implementation": platform.python_implementation(),
        "memory_total_mib": _memory_mib(), "wsl": "microsoft" in kernel.lower(),
        "container": detect_container() if name == "linux" else {
            "detected": False, "runtime": None, "evidence": [], "nvidia_devices": [], "nvidia_library": False,
            "dri_devices": False, "nvidia_access": None, "reason": None},
    }


# ----------------------------------------------------------------------------- public API


def _safe(probe_fn: Callable[[], dict], what: str) -> dict:
    """One broken probe must not sink the profile: report it as unavailable, with the error."""
    try:
        return probe_fn()
    except Exception as exc:  # noqa: BLE001 - reported as the reason in the result
        return {"available": False, "reason": f"{what} probe failed ({type(exc).__name__}: {exc}); please report it",
                "devices": []}


def platform_id_from(os_: str, arch: str, simd: str) -> str:
    return f"{os_}-{arch}-{simd}"


def platform_id(profile: dict | None = None) -> str:
    """Stable id such as ``linux-x86_64-avx512`` or ``darwin-arm64-neon`` (names result folders)."""
    if profile is not None:
        if profile.get("platform_id"):
            return profile["platform_id"]
        return platform_id_from(profile["host"]["os"], profile["host"]["arch"], profile["cpu"]["simd"])
    name = os_name()
    arch = probe_cpu.normalize_arch(platform.machine(), name)
    return platform_id_from(name, arch, probe_cpu.cpu_live(name, arch)["simd"])


def collect(check_engines: bool = True, use_cache: bool = True) -> dict:
    """The machine profile. Without engine checks it takes well under 2 s; with them the first run
    transcribes a short tone once per engine and device (then cached under ``dvm_home()/cache``)."""
    start = time.perf_counter()
    host = host_info()
    cpu = probe_cpu.cpu_live(host["os"], host["arch"])
    pid = platform_id_from(host["os"], host["arch"], cpu["simd"])
    accelerators = {
        "cuda": _safe(lambda: probe_gpu.probe_cuda(container=host["container"], os_name=host["os"]), "CUDA"),
        "vulkan": _safe(lambda: probe_vulkan.probe_vulkan(host["os"], container=host["container"]), "Vulkan"),
        "rocm": _safe(lambda: probe_gpu.probe_rocm(host["os"]), "ROCm"),
        "metal": _safe(lambda: probe_gpu.probe_metal(host["os"], host["arch"], cpu_brand=cpu["brand"]), "Metal"),
    }
    profile = {
        "schema_version": SCHEMA_VERSION,
        "dvm_version": dvm.__version__,
        "platform_id": pid,
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": None,
        "host": host,
        "cpu": cpu,
        "blas": probe_cpu.blas_live(host["os"], host["arch"]),
        "accelerators": accelerators,
        "engines": probe_engines.engines_section(pid, cpu["flags"], accelerators, check_engines, use_cache),
    }
    profile["duration_s"] = round(time.perf_counter() - start, 3)
    return profile

