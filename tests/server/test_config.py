"""Serving settings: the Go server's environment variables on top of a chosen.toml."""

from __future__ import annotations

import pytest

from dvm.harness import models
from dvm.errors import DvmError
from dvm.server import config

from .test_serve_cli import CHOSEN


def test_chosen_file_then_environment(tmp_path):
    path = tmp_path / "chosen.toml"
    path.write_text(CHOSEN.replace("workers = 1", "workers = 2"))
    settings = config.load(path, env={})
    assert (settings.engine.quant, settings.engine.audio_ctx, settings.workers, settings.engine.threads) == ("q8_0", "fit", 2, 1)
    env = {"WHISPER_THREADS": "2", "WHISPER_BEAM_SIZE": "5", "WHISPER_LANGUAGE": "de", "AUDIO_SILENCE_TIMEOUT_MS": "900",
           "AUDIO_MIN_BUFFER_MS": "400", "AUDIO_BUFFER_DURATION_SEC": "12", "DISCORD_TOKEN": "t", "DISCORD_USER_ID": "42"}
    settings = config.load(path, env=env)
    assert settings.engine.threads == 2 and settings.engine.beam_size == 5 and settings.engine.language == "de"
    assert (settings.silence_timeout_ms, settings.min_buffer_ms, settings.buffer_duration_s) == (900, 400, 12.0)
    assert settings.discord_token == "t" and settings.discord_user_id == "42"
    assert settings.describe()["discord"] == {"token_set": True, "user_id": "42"}  # the token itself never shows


def test_transcriber_type_and_bad_values():
    assert config.load(env={"TRANSCRIBER_TYPE": "faster-whisper"}).engine.engine == "faster-whisper"
    with pytest.raises(DvmError, match="TRANSCRIBER_TYPE"):
        config.load(env={"TRANSCRIBER_TYPE": "google"})
    with pytest.raises(DvmError, match="WHISPER_THREADS"):
        config.load(env={"WHISPER_THREADS": "many"})
    with pytest.raises(DvmError, match="no such file"):
        config.load(env={"WHISPER_MODEL_PATH": "/models/ggml-base.bin"})


def test_whisper_model_path_registers_a_ggml_file_in_place():
    path = models.ensure_ggml("tiny.en", "q8_0")
    settings = config.load(env={"WHISPER_MODEL_PATH": str(path)})
    assert (settings.engine.engine, settings.engine.model, settings.engine.quant) == ("whispercpp", "tiny.en", "q8_0")
    assert settings.describe()["engine"]["model"] == "tiny.en"
