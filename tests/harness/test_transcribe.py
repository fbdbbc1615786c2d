"""Real transcriptions of the JFK sample with both engines, through the library and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dvm.harness import engines
from dvm.harness.audio import load_audio
from dvm.harness.engines import EngineConfig
from dvm.errors import DvmError
from tests.conftest import JFK_TEXT


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", " ", text.lower()).split()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def run_dvm(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dvm.cli", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(
    "config",
    [
        EngineConfig(engine="whispercpp", quant="f16"),
        EngineConfig(engine="whispercpp", quant="q8_0", audio_ctx="fit"),
        EngineConfig(engine="faster-whisper", quant="int8"),
        EngineConfig(engine="faster-whisper", quant="float32", beam_size=2),
    ],
    ids=lambda c: f"{c.engine}-{c.quant}-{c.audio_ctx}-b{c.beam_size}",
)
def test_jfk_is_transcribed_exactly(jfk_path, config):
    engine = engines.create(config)
    engine.load()
    result = engine.transcribe(load_audio(jfk_path))
    assert words(result.text) == words(JFK_TEXT)
    assert result.audio_seconds == pytest.approx(11.0, abs=0.01)
    assert 0 < result.rtf < 5
    info = engine.info()
    assert info["model_sha256"] and len(info["model_sha256"]) == 64
    if config.engine == "whispercpp":
        assert result.timings["encode_s"] > 0
        assert "AVX" in info["system_info"] or "NEON" in info["system_info"] or "CPU" in info["system_info"]
    engine.close()


def test_unknown_engine_and_quant():
    with pytest.raises(DvmError, match="unknown engine"):
        engines.create(EngineConfig(engine="nope"))
    with pytest.raises(DvmError, match="quantisation"):
        engines.create(EngineConfig(engine="whispercpp", quant="int8"))


def test_decodes_other_formats(tmp_path, jfk_path):
    """Opus-in-OGG at 48 kHz stereo (what Discord carries) decodes to the same length at 16 kHz."""
    import av
    import numpy as np

    pcm = load_audio(jfk_path)
    out = tmp_path / "jfk.ogg"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libopus", rate=48000, layout="stereo")
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
        frame = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    decoded = load_audio(out)
    assert abs(decoded.size - pcm.size) < 16000 * 0.1


def test_cli_transcribe_json(jfk_path):
    result = run_dvm("transcribe", str(jfk_path), "--json", "--audio-ctx", "fit")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert words(data["text"]) == words(JFK_TEXT)
    assert data["rtf"] > 0 and data["segments"] and data["engine"]["engine"] == "whispercpp"


def test_cli_transcribe_faster_whisper_text(jfk_path):
    result = run_dvm("transcribe", str(jfk_path), "--engine", "faster-whisper")
    assert result.returncode == 0, result.stderr
    assert words(result.stdout) == words(JFK_TEXT)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "absent.wav", "no such file"),
        (lambda d: _write(d / "empty.wav", b""), "file is empty"),
        (lambda d: _write(d / "junk.mp3", b"not audio at all" * 50), "cannot decode"),
    ],
    ids=["missing", "empty", "corrupt"],
)
def test_cli_bad_audio_is_one_clear_line(tmp_path, make, message):
    result = run_dvm("transcribe", str(make(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_model_is_one_clear_line(jfk_path):
    result = run_dvm("transcribe", str(jfk_path), "--model", "nonexistent")
    assert result.returncode == 2 and "not installed" in result.stderr and "Traceback" not in result.stderr


def test_cli_help_everywhere():
    for args in (["--help"], ["probe", "--help"], ["models", "--help"], ["models", "import", "--help"],
                 ["models", "fetch", "--help"], ["models", "list", "--help"], ["models", "path", "--help"],
                 ["transcribe", "--help"]):
        result = run_dvm(*args)
        assert result.returncode == 0 and "usage: dvm" in result.stdout, args


def test_cli_models_list_and_path_json():
    result = run_dvm("models", "path", "tiny.en")
    assert result.returncode == 0 and result.stdout.strip().endswith("ggml-tiny.en.bin")
    listing = json.loads(run_dvm("models", "list", "--json").stdout)
    names = {(m["name"], m["format"]) for m in listing["installed"]}
    assert ("tiny.en", "ggml") in names and ("tiny.en", "ct2") in names


@pytest.mark.slow
def test_base_q8_0_transcribes(jfk_path):
    from dvm.harness import models

    try:
        dirs = models.pip_source_dirs("base")
    except DvmError as exc:
        pytest.skip(str(exc))
    models.import_ct2(dirs, quant="q8_0")
    for config in (EngineConfig(model="base", quant="q8_0", audio_ctx="fit"), EngineConfig(engine="faster-whisper", model="base", quant="int8")):
        engine = engines.create(config)
        result = engine.transcribe(load_audio(jfk_path))
        assert words(result.text) == words(JFK_TEXT), config
        engine.close()


def test_fitted_context_is_safe_for_short_utterances(jfk_path):
    """Below ~512 frames tiny.en repeats short utterances; the fitted policy keeps a floor."""
    from dvm.harness.engines.base import MIN_FITTED_CTX, fitted_audio_ctx

    assert fitted_audio_ctx(2.6) == MIN_FITTED_CTX
    assert fitted_audio_ctx(10.0) == 628 and fitted_audio_ctx(60.0) == 1500
    pcm = load_audio(jfk_path)[: int(2.6 * 16000)]
    engine = engines.create(EngineConfig(quant="q8_0", audio_ctx="fit"))
    text = engine.transcribe(pcm).text
    engine.close()
    assert words(text) == ["and", "so", "my", "fellow", "americans"], text  # once, nothing invented after it
