"""Speech engines behind one interface (see base.py)."""

from __future__ import annotations

from dvm.errors import DvmError
from dvm.harness.engines.base import Engine, EngineConfig, Segment, Transcript

ENGINE_NAMES = ("whispercpp", "faster-whisper", "remote")


def create(config: EngineConfig) -> Engine:
    """Build (but do not load) the engine named in ``config``."""
    if config.engine == "whispercpp":
        from dvm.harness.engines.whispercpp import WhisperCppEngine  # noqa: PLC0415 - each engine imports its runtime: load only the one asked for

        return WhisperCppEngine(config)
    if config.engine == "faster-whisper":
        from dvm.harness.engines.fasterwhisper import FasterWhisperEngine  # noqa: PLC0415 - each engine imports its runtime: load only the one asked for

        return FasterWhisperEngine(config)
    if config.engine == "remote":  # an OpenAI-compatible server (DVM_REMOTE_URL ...), see remote.py
        from dvm.harness.engines.remote import RemoteEngine  # noqa: PLC0415 - each engine imports its runtime: load only the one asked for

        return RemoteEngine(config)
    raise DvmError(f"unknown engine {config.engine!r}; choose one of {', '.join(ENGINE_NAMES)}")


__all__ = ["Engine", "EngineConfig", "Segment", "Transcript", "create", "ENGINE_NAMES"]
