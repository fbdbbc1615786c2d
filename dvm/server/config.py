"""Serving settings: the Go server's environment variables, and the configuration chosen by `dvm bench`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from dvm.envvars import number
from dvm.errors import DvmError
from dvm.harness.engines import EngineConfig

log = logging.getLogger("dvm.server")

# Go-server variables we accept but cannot honour: warned about once.
_UNSUPPORTED = ("WHISPER_GPU_LAYERS", "AUDIO_CONTEXT_EXPIRATION_SEC")


@dataclass
class Settings:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(audio_ctx="fit", quant="q8_0"))
    variant: str = "wheel"
    workers: int = 1
    buffer_duration_s: float = 30.0  # AUDIO_BUFFER_DURATION_SEC: longest utterance before a forced cut
    silence_timeout_ms: int = 1500  # AUDIO_SILENCE_TIMEOUT_MS: silence that ends an utterance
    min_buffer_ms: int = 300  # AUDIO_MIN_BUFFER_MS: shorter speech is ignored
    overlap_ms: int = 0  # AUDIO_OVERLAP_MS: audio kept from the previous cut when a long utterance is split
    vad_threshold: float = 0.5  # VAD_THRESHOLD
    queue_size: int = 32  # utterances waiting for a worker before the oldest is dropped
    # live captions (dvm.server.live); DVM_LIVE=0 restores the fixed silence timeout and no interims
    live: bool = True
    speculative_pause_ms: int = 150  # AUDIO_SPECULATIVE_PAUSE_MS: a pause this long starts a speculative decode
    early_endpoint_ms: int = 550  # AUDIO_EARLY_ENDPOINT_MS: quiet that ends an utterance whose text ends a sentence
    interim_after_ms: int = 1000  # AUDIO_INTERIM_AFTER_MS: speech before the first interim line
    interim_interval_ms: int = 1000  # AUDIO_INTERIM_INTERVAL_MS: between interim decodes of one speaker
    interim_duty: float = 0.5  # AUDIO_INTERIM_DUTY: the most of one core interims may take (0.05-1)
    # DVM_LEND_THREADS=0: a worker always decodes with its own threads, even when the other workers idle
    lend_threads: bool = True
    discord_token: str | None = field(default=None, repr=False)  # a secret: never in a repr
    discord_user_id: str | None = None
    source: str = "defaults"

    def describe(self) -> dict:
        return {"engine": self.engine.as_dict(), "variant": self.variant, "workers": self.workers,
                "buffer_duration_s": self.buffer_duration_s, "silence_timeout_ms": self.silence_timeout_ms,
                "min_buffer_ms": self.min_buffer_ms, "vad_threshold": self.vad_threshold,
                "queue_size": self.queue_size, "source": self.source,
                "live": {"enabled": self.live, "speculative_pause_ms": self.speculative_pause_ms,
                         "early_endpoint_ms": self.early_endpoint_ms, "interim_after_ms": self.interim_after_ms,
                         "interim_interval_ms": self.interim_interval_ms, "interim_duty": self.interim_duty},
                "lend_threads": self.lend_threads,
                "discord": {"token_set": bool(self.discord_token), "user_id": self.discord_user_id}}


def from_chosen(path: Path, settings: Settings) -> Settings:
    from dvm.harness.bench.choose import read_chosen  # noqa: PLC0415 - harness modules load only when serving needs them

    data = read_chosen(path)
    settings.engine = EngineConfig.from_dict(data["engine"])
    settings.variant = data["engine"].get("variant", "wheel")
    serving = data.get("serving", {})
    settings.workers = int(serving.get("workers", 1))
    if "threads" in serving:
        settings.engine.threads = int(serving["threads"])
    settings.source = str(path)
    return settings


def load(config_file: Path | None = None, env: dict | None = None) -> Settings:
    """Settings from a chosen.toml (if given), then the environment (which wins, as in the Go server)."""
    env = dict(os.environ if env is None else env)
    settings = Settings()
    if config_file is not None:
        from_chosen(config_file, settings)
    engine = settings.engine
    transcriber = env.get("TRANSCRIBER_TYPE", "").lower()
    if transcriber in ("faster-whisper", "fasterwhisper"):
        engine.engine = "faster-whisper"
        engine.quant = "int8" if engine.quant in ("f16", "q8_0") else engine.quant
    elif transcriber in ("whisper", "whispercpp"):
        engine.engine = "whispercpp"
    elif transcriber == "remote":  # DVM_REMOTE_URL / DVM_REMOTE_MODEL / DVM_REMOTE_API_KEY
        if not env.get("DVM_REMOTE_URL"):
            raise DvmError("TRANSCRIBER_TYPE=remote needs DVM_REMOTE_URL (an OpenAI-compatible server's base URL)")
        engine.engine = "remote"
    elif transcriber not in ("", "auto"):
        raise DvmError(f"TRANSCRIBER_TYPE={transcriber!r} is not supported (whisper, whispercpp, faster-whisper, remote)")
    if env.get("WHISPER_MODEL_PATH"):
        _apply_model_path(env["WHISPER_MODEL_PATH"], engine)
    if env.get("WHISPER_LANGUAGE"):
        engine.language = env["WHISPER_LANGUAGE"] if env["WHISPER_LANGUAGE"] != "auto" else "auto"
    engine.threads = number(env, "WHISPER_THREADS", int, engine.threads) or engine.threads
    engine.beam_size = number(env, "WHISPER_BEAM_SIZE", int, engine.beam_size) or engine.beam_size
    if env.get("WHISPER_USE_GPU", "").lower() in ("1", "true", "yes"):
        engine.device = "gpu"
    settings.buffer_duration_s = number(env, "AUDIO_BUFFER_DURATION_SEC", float, settings.buffer_duration_s)
    settings.silence_timeout_ms = number(env, "AUDIO_SILENCE_TIMEOUT_MS", int, settings.silence_timeout_ms)
    settings.min_buffer_ms = number(env, "AUDIO_MIN_BUFFER_MS", int, settings.min_buffer_ms)
    settings.overlap_ms = number(env, "AUDIO_OVERLAP_MS", int, settings.overlap_ms)
    settings.vad_threshold = number(env, "VAD_THRESHOLD", float, settings.vad_threshold)
    settings.workers = number(env, "DVM_WORKERS", int, settings.workers) or settings.workers
    if env.get("DVM_LIVE", "").strip():
        settings.live = env["DVM_LIVE"].strip().lower() not in ("0", "false", "no", "off")
    if env.get("DVM_LEND_THREADS", "").strip():
        settings.lend_threads = env["DVM_LEND_THREADS"].strip().lower() not in ("0", "false", "no", "off")
    settings.speculative_pause_ms = number(env, "AUDIO_SPECULATIVE_PAUSE_MS", int, settings.speculative_pause_ms)
    settings.early_endpoint_ms = number(env, "AUDIO_EARLY_ENDPOINT_MS", int, settings.early_endpoint_ms)
    settings.interim_after_ms = number(env, "AUDIO_INTERIM_AFTER_MS", int, settings.interim_after_ms)
    settings.interim_interval_ms = number(env, "AUDIO_INTERIM_INTERVAL_MS", int, settings.interim_interval_ms)
    settings.interim_duty = number(env, "AUDIO_INTERIM_DUTY", float, settings.interim_duty)
    if not 0.05 <= settings.interim_duty <= 1.0:
        raise DvmError(f"AUDIO_INTERIM_DUTY must be between 0.05 and 1 (a share of one core), not {settings.interim_duty:g}")
    settings.discord_token = env.get("DISCORD_TOKEN") or None
    settings.discord_user_id = env.get("DISCORD_USER_ID") or None
    for name in _UNSUPPORTED:
        if env.get(name):
            log.warning("%s is set but has no effect in dvm", name)
    return settings


def _apply_model_path(value: str, engine: EngineConfig) -> None:
    """WHISPER_MODEL_PATH may be a ggml file or CTranslate2 dir (registered in place) or a model name."""
    path = Path(value).expanduser()
    if not path.exists():
        if "/" in value or value.endswith(".bin"):
            raise DvmError(f"WHISPER_MODEL_PATH={value}: no such file")
        engine.model = value  # a model name, e.g. tiny.en
        return
    from dvm.harness import models  # noqa: PLC0415 - harness modules load only when serving needs them

    record = models.register_external(path)
    engine.model = record.name
    if record.format == "ggml":
        engine.engine, engine.quant = "whispercpp", record.quant
    else:
        engine.engine = "faster-whisper"
        engine.quant = engine.quant if engine.quant not in ("f16", "q8_0", "f32") else "int8"
