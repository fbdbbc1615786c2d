"""whisper.cpp through the pywhispercpp bindings (the PyPI wheel or a source-built variant)."""

from __future__ import annotations

import re
import threading
import time

import numpy as np

from dvm.errors import DvmError
from dvm.harness import models
from dvm.harness.audio import SAMPLE_RATE
from dvm.harness.engines.base import Engine, EngineConfig, Segment, Transcript, resolve_audio_ctx
from dvm.harness.wcpp_text import build_features, timings_ms

_LOG_LOCK = threading.Lock()


def _bindings():
    try:
        import _pywhispercpp as pw  # noqa: PLC0415 - native bindings of the variant chosen at run time
    except ImportError as exc:
        raise DvmError(f"whisper.cpp bindings are not installed ({exc}); pip install pywhispercpp") from None
    return pw


def system_info() -> str:
    return _bindings().whisper_print_system_info().strip()


def _capture_logs(fn):
    """Run ``fn`` with whisper.cpp's log routed to a list; always restore the default logger."""
    pw = _bindings()
    lines: list[str] = []
    with _LOG_LOCK:
        pw.whisper_log_set(lambda level, text, user_data=None: lines.append(text))
        try:
            result = fn()
        finally:
            pw.whisper_log_set(None)
    return result, "".join(lines)


class WhisperCppEngine(Engine):
    name = "whispercpp"

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        if config.quant not in ("f16", "q8_0", "f32"):
            raise DvmError(f"whispercpp quantisation must be f16, q8_0 or f32, not {config.quant!r}")
        self._ctx = None
        self._params = None
        self.model_path = None
        self.load_log = ""

    def load(self) -> float:
        pw = _bindings()
        self.model_path = models.ensure_ggml(self.config.model, self.config.quant)
        context_params = pw.whisper_context_default_params()
        context_params.use_gpu = self.config.device != "cpu"
        started = time.perf_counter()
        self._ctx, self.load_log = _capture_logs(
            lambda: pw.whisper_init_from_file_with_params(str(self.model_path), context_params)
        )
        self.load_seconds = time.perf_counter() - started
        if self._ctx is None:
            raise DvmError(f"whisper.cpp could not load {self.model_path}")
        strategy = pw.whisper_sampling_strategy
        greedy = self.config.beam_size <= 1
        params = pw.whisper_full_default_params(strategy.WHISPER_SAMPLING_GREEDY if greedy else strategy.WHISPER_SAMPLING_BEAM_SEARCH)
        params.n_threads = self.config.threads
        params.print_progress = False
        params.print_realtime = False
        params.print_timestamps = False
        params.print_special = False
        params.no_context = True
        params.language = self.config.language or "en"
        if not greedy:
            params.beam_search = {"beam_size": self.config.beam_size, "patience": -1.0}
        if not self.config.temperature_fallback:
            params.temperature_inc = 0.0
        self._params = params
        return self.load_seconds

    def transcribe(self, pcm: np.ndarray) -> Transcript:
        if self._ctx is None:
            self.load()
        pw = _bindings()
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        audio_seconds = pcm.size / SAMPLE_RATE
        self._params.audio_ctx = resolve_audio_ctx(self.config.audio_ctx, audio_seconds)
        pw.whisper_reset_timings(self._ctx)
        started = time.perf_counter()
        status = pw.whisper_full(self._ctx, self._params, pcm, pcm.size)
        seconds = time.perf_counter() - started
        if status != 0:
            raise DvmError(f"whisper.cpp failed to transcribe (status {status})")
        segments = []
        for i in range(pw.whisper_full_n_segments(self._ctx)):
            raw = pw.whisper_full_get_segment_text(self._ctx, i)
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            segments.append(Segment(pw.whisper_full_get_segment_t0(self._ctx, i) / 100.0,
                                    pw.whisper_full_get_segment_t1(self._ctx, i) / 100.0, text.strip()))
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcript(text, segments, seconds, audio_seconds, self.timings(), self.config.language)

    def set_threads(self, threads: int) -> bool:
        if self._ctx is None:
            self.load()
        self._params.n_threads = max(1, int(threads))
        return True

    def timings(self) -> dict[str, float]:
        """whisper.cpp's own split of the last call (mel, encode, decode, batchd, prompt, sample), in seconds."""
        _, log = _capture_logs(lambda: _bindings().whisper_print_timings(self._ctx))
        return {f"{name}_s": ms / 1000.0 for name, ms, _ in timings_ms(log) if name != "load"}

    def info(self) -> dict:
        pw = _bindings()
        record = models.find(self.config.model, "ggml", self.config.quant)
        sysinfo = pw.whisper_print_system_info().strip()
        try:
            from importlib.metadata import version  # noqa: PLC0415 - only for a version string

            binding_version = version("pywhispercpp")
        except Exception:  # noqa: BLE001 - a source build may not be installed as a distribution
            binding_version = getattr(pw, "__version__", "unknown")
        gpu = re.search(r"using (CUDA|Vulkan|Metal|ROCm|SYCL)\w* backend", self.load_log, re.IGNORECASE)
        return {
            "engine": self.name,
            "engine_version": f"pywhispercpp {binding_version}",
            "build_features": build_features(sysinfo),
            "system_info": sysinfo,
            "model_file": str(self.model_path) if self.model_path else None,
            "model_sha256": record.sha256 if record else None,
            "device": gpu.group(1).lower() if gpu else "cpu",
        }

    def close(self) -> None:
        if self._ctx is not None:
            _bindings().whisper_free(self._ctx)
            self._ctx = None
