"""faster-whisper (CTranslate2): the same weights as the ggml file, in CTranslate2's own format."""

from __future__ import annotations

import time

import numpy as np

from dvm.errors import DvmError
from dvm.harness import models
from dvm.harness.audio import SAMPLE_RATE
from dvm.harness.engines.base import Engine, EngineConfig, Segment, Transcript

COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32", "default", "auto")
# whisper.cpp-style names accepted for convenience
_ALIASES = {"f16": "float16", "f32": "float32", "q8_0": "int8"}


class FasterWhisperEngine(Engine):
    name = "faster-whisper"

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self.compute_type = _ALIASES.get(config.quant, config.quant)
        if self.compute_type not in COMPUTE_TYPES:
            raise DvmError(f"faster-whisper compute type must be one of {', '.join(COMPUTE_TYPES)}, not {config.quant!r}")
        self._model = None
        self.model_dir = None

    def load(self) -> float:
        try:
            from faster_whisper import WhisperModel  # noqa: PLC0415 - heavy runtime, loaded on first use
        except ImportError as exc:
            raise DvmError(f"faster-whisper is not installed ({exc}); pip install faster-whisper") from None
        self.model_dir = models.ensure_ct2(self.config.model)
        device = "cuda" if self.config.device in ("cuda", "gpu") else "cpu"
        started = time.perf_counter()
        try:
            self._model = WhisperModel(str(self.model_dir), device=device, compute_type=self.compute_type,
                                       cpu_threads=self.config.threads, num_workers=1)
        except (ValueError, RuntimeError) as exc:
            raise DvmError(f"faster-whisper could not load {self.model_dir} as {self.compute_type} on {device}: {exc}") from None
        self.load_seconds = time.perf_counter() - started
        return self.load_seconds

    def transcribe(self, pcm: np.ndarray) -> Transcript:
        if self._model is None:
            self.load()
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        audio_seconds = pcm.size / SAMPLE_RATE
        temperature = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if self.config.temperature_fallback else 0.0
        english_only = self.config.model.endswith(".en")
        started = time.perf_counter()
        generator, info = self._model.transcribe(
            pcm,
            language=None if english_only else (self.config.language or None),
            beam_size=max(1, self.config.beam_size),
            best_of=1,
            temperature=temperature,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=False,
        )
        segments = [Segment(s.start, s.end, s.text.strip()) for s in generator]
        seconds = time.perf_counter() - started
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcript(text, segments, seconds, audio_seconds, {}, info.language)

    def info(self) -> dict:
        import ctranslate2  # noqa: PLC0415 - heavy runtime, loaded on first use
        import faster_whisper  # noqa: PLC0415 - heavy runtime, loaded on first use

        record = models.find(self.config.model, "ct2", models.any_ct2_quant(self.config.model))
        return {
            "engine": self.name,
            "engine_version": f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}",
            "build_features": {
                "compute_types_cpu": sorted(ctranslate2.get_supported_compute_types("cpu")),
                "cuda_devices": ctranslate2.get_cuda_device_count(),
                "compute_type": self.compute_type,
            },
            "model_file": str(self.model_dir) if self.model_dir else None,
            "model_sha256": record.sha256 if record else None,
            "device": "cuda" if self.config.device in ("cuda", "gpu") else "cpu",
        }

    def close(self) -> None:
        self._model = None
