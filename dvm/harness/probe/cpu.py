"""CPU and BLAS facts for the probe.

Every parser takes text (``/proc/cpuinfo``, a ``sysctl -a`` dump) so recorded inputs from other
platforms can be tested here; the ``*_live`` functions read this machine.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy

# Probe key -> /proc/cpuinfo token. Keys follow whisper.cpp's system-info names, lower-cased.
X86_FLAGS: dict[str, str] = {
    "sse3": "pni",
    "ssse3": "ssse3",
    "sse4_1": "sse4_1",
    "sse4_2": "sse4_2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "bmi2": "bmi2",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512_vbmi": "avx512vbmi",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}
ARM_FLAGS: dict[str, str] = {
    "neon": "asimd",  # "neon" on 32-bit ARM kernels
    "fp16": "asimdhp",
    "dotprod": "asimddp",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}
# macOS sysctl keys (first one present wins); Apple Silicon has no SVE.
SYSCTL_ARM: dict[str, tuple[str, ...]] = {
    "neon": ("hw.optional.neon", "hw.optional.AdvSIMD"),
    "fp16": ("hw.optional.arm.FEAT_FP16", "hw.optional.neon_fp16"),
    "dotprod": ("hw.optional.arm.FEAT_DotProd",),
    "i8mm": ("hw.optional.arm.FEAT_I8MM",),
    "bf16": ("hw.optional.arm.FEAT_BF16",),
    "sve": ("hw.optional.arm.FEAT_SVE",),
    "sve2": ("hw.optional.arm.FEAT_SVE2",),
    "sme": ("hw.optional.arm.FEAT_SME",),
}
SYSCTL_X86: dict[str, tuple[str, ...]] = {
    "sse3": ("hw.optional.sse3",),
    "ssse3": ("hw.optional.supplementalsse3",),
    "sse4_1": ("hw.optional.sse4_1",),
    "sse4_2": ("hw.optional.sse4_2",),
    "avx": ("hw.optional.avx1_0",),
    "avx2": ("hw.optional.avx2_0",),
    "fma": ("hw.optional.fma",),
    "bmi2": ("hw.optional.bmi2",),
    "avx512f": ("hw.optional.avx512f",),
    "avx512bw": ("hw.optional.avx512bw",),
    "avx512vl": ("hw.optional.avx512vl",),
    "avx512_vnni": ("hw.optional.avx512vnni",),
}
# (implementer, part) -> core name, for ARM /proc/cpuinfo, which carries no model name.
ARM_PARTS: dict[tuple[int, int], str] = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD8E): "Neoverse-N3",
    (0x41, 0xD84): "Neoverse-V3", (0x41, 0xD4B): "Cortex-A78C", (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710", (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0xC0, 0xAC3): "AmpereOne", (0x61, 0x0): "Apple",
}
ARM_VENDORS = {0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x48: "HiSilicon", 0x4E: "NVIDIA",
               0x51: "Qualcomm", 0x61: "Apple", 0xC0: "Ampere"}


def normalize_arch(machine: str, os_name: str) -> str:
    """``x86_64`` for any 64-bit x86; ``aarch64`` on Linux and ``arm64`` elsewhere for 64-bit ARM."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64", "armv8l", "arm64e"):
        return "aarch64" if os_name == "linux" else "arm64"
    return m or "unknown"


def is_arm(arch: str) -> bool:
    return arch in ("aarch64", "arm64") or arch.startswith("arm")


def simd_tier(arch: str, flags: dict[str, bool]) -> str:
    """The coarse SIMD level used in the platform id."""
    if arch == "x86_64" or arch in ("i386", "i686", "x86"):
        for tier, key in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse4", "sse4_2")):
            if flags.get(key):
                return tier
        return "sse2" if arch == "x86_64" else "generic"
    if is_arm(arch):
        return "neon" if flags.get("neon") else "generic"
    return "generic"


def _cpu_record(arch: str, source: str) -> dict:
    return {
        "brand": None, "vendor": None, "arch": arch, "source": source,
        "physical_cores": None, "logical_cores": None, "usable_cores": None,
        "performance_cores": None, "efficiency_cores": None,
        "simd": "generic", "flags": {}, "raw_flags": [],
    }


# ----------------------------------------------------------------------------- Linux /proc/cpuinfo


def parse_proc_cpuinfo(text: str, arch: str) -> dict:
    """CPU facts from the text of ``/proc/cpuinfo``. A flag counts only if every processor has it."""
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    entries: list[dict[str, str]] = []
    for block in blocks:
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        entries.append(entry)
    processors = [e for e in entries if "processor" in e]
    cpu = _cpu_record(arch, "/proc/cpuinfo")
    token_sets = [set((e.get("flags") or e.get("Features") or "").split()) for e in processors]
    tokens = set.intersection(*token_sets) if token_sets else set()
    cpu["raw_flags"] = sorted(tokens)
    if is_arm(arch):
        cpu["flags"] = {key: tok in tokens for key, tok in ARM_FLAGS.items()}
        cpu["flags"]["neon"] = "asimd" in tokens or "neon" in tokens
    else:
        cpu["flags"] = {key: tok in tokens for key, tok in X86_FLAGS.items()}
    cpu["simd"] = simd_tier(arch, cpu["flags"])
    cpu["logical_cores"] = len(processors) or None
    first = processors[0] if processors else {}
    cpu["vendor"] = first.get("vendor_id")
    cpu["brand"] = first.get("model name") or first.get("Processor") or first.get("cpu model")
    if "CPU implementer" in first:
        try:
            impl = int(first["CPU implementer"], 16)
            part = int(first.get("CPU part", "0"), 16)
        except ValueError:
            impl, part = -1, -1
        cpu["vendor"] = cpu["vendor"] or ARM_VENDORS.get(impl, f"0x{impl:x}")
        if not cpu["brand"]:
            name = ARM_PARTS.get((impl, part)) or ARM_PARTS.get((impl, 0))
            cpu["brand"] = f"{ARM_VENDORS.get(impl, 'ARM')} {name}" if name and name != "Apple" else name
            if not cpu["brand"]:
                cpu["brand"] = f"{ARM_VENDORS.get(impl, 'ARM')} part 0x{part:x}"
    cores = {(e.get("physical id", "0"), e["core id"]) for e in processors if "core id" in e}
    cpu["physical_cores"] = len(cores) if cores else cpu["logical_cores"]
    return cpu


# ----------------------------------------------------------------------------- macOS sysctl


def parse_sysctl(text: str) -> dict[str, str]:
    """``key: value`` lines of ``sysctl -a`` (also accepts ``key = value``)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.]+)\s*[:=]\s?(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def cpu_from_sysctl(text: str) -> dict:
    """CPU facts from a macOS ``sysctl -a`` dump."""
    values = parse_sysctl(text)
    arm = values.get("hw.optional.arm64") == "1" or "Apple" in values.get("machdep.cpu.brand_string", "")
    arch = "arm64" if arm else "x86_64"
    cpu = _cpu_record(arch, "sysctl")
    optional = {k.removeprefix("hw.optional."): v for k, v in values.items() if k.startswith("hw.optional.")}
    cpu["raw_flags"] = sorted(k for k, v in optional.items() if v == "1")
    table = SYSCTL_ARM if arm else SYSCTL_X86
    flags = {key: any(values.get(name) == "1" for name in names) for key, names in table.items()}
    if not arm:
        features = values.get("machdep.cpu.features", "") + " " + values.get("machdep.cpu.leaf7_features", "")
        words = set(features.upper().split())
        flags["f16c"] = "F16C" in words
        for key in X86_FLAGS:
            flags.setdefault(key, key.upper() in words)
        flags = {key: flags[key] for key in X86_FLAGS}
    cpu["flags"] = flags
    cpu["simd"] = simd_tier(arch, flags)
    cpu["brand"] = values.get("machdep.cpu.brand_string")
    cpu["vendor"] = "Apple" if arm else values.get("machdep.cpu.vendor")
    cpu["physical_cores"] = _int(values.get("hw.physicalcpu"))
    cpu["logical_cores"] = _int(values.get("hw.logicalcpu") or values.get("hw.ncpu"))
    if "hw.perflevel1.physicalcpu" in values:
        cpu["performance_cores"] = _int(values.get("hw.perflevel0.physicalcpu"))
        cpu["efficiency_cores"] = _int(values.get("hw.perflevel1.physicalcpu"))
    return cpu


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------- other OSes: py-cpuinfo


def cpu_from_pycpuinfo(info: dict, arch: str) -> dict:
    """CPU facts from ``cpuinfo.get_cpu_info()`` (Windows and anything without /proc/cpuinfo)."""
    cpu = _cpu_record(arch, "py-cpuinfo")
    tokens = set(info.get("flags") or [])
    cpu["raw_flags"] = sorted(tokens)
    aliases = {"sse3": ("pni", "sse3"), "avx512_vnni": ("avx512_vnni", "avx512vnni"),
               "avx512_bf16": ("avx512_bf16", "avx512bf16"), "avx512_vbmi": ("avx512vbmi",),
               "neon": ("asimd", "neon"), "fp16": ("asimdhp",), "dotprod": ("asimddp",)}
    table = ARM_FLAGS if is_arm(arch) else X86_FLAGS
    cpu["flags"] = {k: any(t in tokens for t in aliases.get(k, (tok,))) for k, tok in table.items()}
    cpu["simd"] = simd_tier(arch, cpu["flags"])
    cpu["brand"] = info.get("brand_raw") or None
    cpu["vendor"] = info.get("vendor_id_raw") or None
    cpu["logical_cores"] = info.get("count") or os.cpu_count()
    return cpu


# ----------------------------------------------------------------------------- this machine


def usable_cores() -> int | None:
    """CPUs this process may run on: affinity mask, then a cgroup v2 CPU quota if smaller."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max" and count:
            count = max(1, min(count, int(int(quota) / int(period) + 0.999)))
    except (OSError, ValueError):
        pass
    return count


def cpu_live(os_name: str, arch: str) -> dict:
    cpu: dict | None = None
    if os_name == "linux":
        try:
            cpu = parse_proc_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"), arch)
        except OSError:
            cpu = None
        if cpu and is_arm(arch) and not cpu["brand"]:
            try:
                cpu["brand"] = Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
            except OSError:
                pass
    elif os_name == "darwin":
        text = sysctl_dump()
        if text:
            cpu = cpu_from_sysctl(text)
    if cpu is None or not cpu["flags"]:
        try:
            import cpuinfo  # noqa: PLC0415 - py-cpuinfo: ~1 s (spawns a CPUID helper), so only where nothing else works

            cpu = cpu_from_pycpuinfo(cpuinfo.get_cpu_info(), arch)
        except Exception:  # noqa: BLE001 - the probe reports what it can
            cpu = _cpu_record(arch, "none")
            cpu["logical_cores"] = os.cpu_count()
    cpu["arch"] = arch
    cpu["usable_cores"] = usable_cores()
    if not cpu["brand"]:
        cpu["brand"] = platform.processor() or None
    return cpu


@lru_cache(maxsize=1)
def sysctl_dump() -> str:
    try:
        return subprocess.run(["sysctl", "-a"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# ----------------------------------------------------------------------------- BLAS


@lru_cache(maxsize=1)
def _ldconfig_entries() -> dict[str, str]:
    """soname -> path from ``ldconfig -p`` (Linux); empty elsewhere."""
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        entries: dict[str, str] = {}
        for line in out.splitlines():
            match = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
            if match and (sys.maxsize > 2**32) == ("64" in match.group(2)):
                entries.setdefault(match.group(1), match.group(3))
        return entries
    return {}


def find_library(sonames: tuple[str, ...], stem: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """Path (or name) of a shared library, without loading it (loading OpenBLAS starts threads)."""
    if sys.platform.startswith("linux"):
        entries = _ldconfig_entries()
        for name in sonames:
            if name in entries:
                return entries[name]
    for directory in extra_dirs:
        for name in sonames:
            path = Path(directory) / name
            if path.exists():
                return str(path)
    if not sys.platform.startswith("linux"):
        return ctypes.util.find_library(stem)
    return None


def numpy_blas() -> dict:
    """What numpy itself was built against (not what whisper.cpp uses)."""
    try:
        config = numpy.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return {"name": blas.get("name"), "version": blas.get("version"), "numpy_version": numpy.__version__}
    except Exception as exc:  # noqa: BLE001 - reported as the reason in the result
        return {"name": None, "version": None, "numpy_version": None, "reason": f"numpy config unreadable: {exc}"}


def blas_live(os_name: str, arch: str) -> dict:
    prefix_lib = (os.path.join(sys.prefix, "lib"),)
    openblas = find_library(("libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "libopenblas.dll"),
                            "openblas", ("/opt/homebrew/opt/openblas/lib", "/usr/local/opt/openblas/lib") + prefix_lib)
    if openblas:
        dev = bool(find_library(("libopenblas.so", "libopenblas.dylib"), "openblas",
                                ("/opt/homebrew/opt/openblas/lib", "/usr/local/opt/openblas/lib")))
        result = {"available": True, "path": openblas, "reason": None, "build_ready": dev}
        if not dev:
            result["reason"] = "runtime library only; to build whisper.cpp with GGML_BLAS install libopenblas-dev"
    else:
        hint = {"linux": "apt-get install libopenblas-dev (or dnf install openblas-devel)",
                "darwin": "brew install openblas", "windows": "install OpenBLAS and add its bin folder to PATH"}
        result = {"available": False, "path": None, "build_ready": False,
                  "reason": f"libopenblas not found: {hint.get(os_name, 'install OpenBLAS')}"}
    mkl = find_library(("libmkl_rt.so.2", "libmkl_rt.so.1", "libmkl_rt.so", "libmkl_rt.dylib", "mkl_rt.2.dll"),
                       "mkl_rt", prefix_lib)
    if mkl:
        mkl_result = {"available": True, "path": mkl, "reason": None}
    elif arch != "x86_64":
        mkl_result = {"available": False, "path": None, "reason": "Intel MKL is x86-64 only"}
    else:
        mkl_result = {"available": False, "path": None,
                      "reason": "libmkl_rt not found (optional): pip install mkl, or apt-get install libmkl-rt"}
    if os_name == "darwin":
        framework = Path("/System/Library/Frameworks/Accelerate.framework")
        accelerate = {"available": framework.exists(), "path": str(framework) if framework.exists() else None,
                      "reason": None if framework.exists() else "Accelerate.framework missing from /System/Library"}
    else:
        accelerate = {"available": False, "path": None, "reason": "Accelerate is macOS-only"}
    return {"openblas": result, "mkl": mkl_result, "accelerate": accelerate, "numpy": numpy_blas()}
