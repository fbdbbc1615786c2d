"""Speech engines behind one interface (see base.py)."""

from __future__ import annotations

from dvm.harness.engines.base import Engine, EngineConfig, Segment, Transcript
from dvm.harness.errors import DvmError

ENGINE_NAMES = ("whispercpp", "faster-whisper")


def create(config: EngineConfig) -> Engine:
    """Build (but do not load) the engine named in ``config``."""
    if config.engine == "whispercpp":
        from dvm.harness.engines.whispercpp import WhisperCppEngine

        return WhisperCppEngine(config)
    if config.engine == "faster-whisper":
        from dvm.harness.engines.fasterwhisper import FasterWhisperEngine

        return FasterWhisperEngine(config)
    raise DvmError(f"unknown engine {config.engine!r}; choose one of {', '.join(ENGINE_NAMES)}")


__all__ = ["Engine", "EngineConfig", "Segment", "Transcript", "create", "ENGINE_NAMES"]
