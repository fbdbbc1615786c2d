"""The clips manifest: the committed fixtures, every kind of bad input, and the generator's pure parts."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from dvm.harness import clipgen
from dvm.harness.clips import DEFAULT_CLIPS_DIR, Clip, load_clips, read_audio, write_wav
from dvm.errors import DvmError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


# ------------------------------------------------------------------ the committed fixtures


@pytest.fixture(scope="module")
def committed() -> list[Clip]:
    """The top-level clips (TTS voices, JFK and its copies, silence, dialogues); the real tier is below fixtures/audio/real."""
    return [c for c in load_clips(FIXTURES) if c.path.parent == FIXTURES]


def test_default_directory_is_the_committed_fixtures(committed):
    assert DEFAULT_CLIPS_DIR == FIXTURES
    assert [c.id for c in load_clips()] == [c.id for c in load_clips(FIXTURES)]


def test_fixtures_are_16k_mono_16bit_and_5_to_15_seconds(committed):
    assert len(committed) >= 12
    for clip in committed:
        with wave.open(str(clip.path), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2), clip.id
        assert 5.0 <= clip.seconds <= 15.0, clip.id
        audio = read_audio(clip)
        assert audio.dtype == np.float32
        assert audio.ndim == 1
        assert len(audio) == round(clip.seconds * 16000)
        assert float(np.max(np.abs(audio))) <= 1.0


def test_fixtures_cover_the_required_kinds(committed):
    kinds = {c.kind for c in committed}
    assert {"clean", "human", "noisy", "quiet", "codec", "silence", "noise", "dialogue"} <= kinds
    engines = {c.voice.split(":")[0] for c in committed if c.kind == "clean" and c.language == "en"}
    assert {"espeak-ng", "flite", "festival"} <= engines
    assert len({c.voice for c in committed if c.kind == "clean" and c.language == "en"}) >= 5
    assert sum(c.language == "de" for c in committed) >= 1
    assert sum(c.kind == "dialogue" for c in committed) >= 2


def test_jfk_and_its_degraded_versions_carry_the_exact_reference(committed):
    jfk = [c for c in committed if c.id.startswith("en-jfk")]
    assert {c.kind for c in jfk} == {"human", "noisy", "quiet", "codec"}
    assert all(c.text == JFK_TEXT for c in jfk)
    assert all(c.seconds == pytest.approx(11.0) for c in jfk)


def test_silence_clips_expect_an_empty_transcript_and_are_quiet(committed):
    silent = [c for c in committed if c.kind in ("silence", "noise")]
    assert len(silent) >= 2
    for clip in silent:
        assert clip.text == "" and clip.expects_silence and clip.scored
        assert 5.0 <= clip.seconds <= 15.0
    for clip in committed:
        if clip.kind == "silence":
            assert np.sqrt(np.mean(read_audio(clip) ** 2)) < 10 ** (-50 / 20), clip.id


def test_speech_clips_have_text_and_sound(committed):
    for clip in committed:
        if clip.kind in ("silence", "noise"):
            continue
        assert clip.text, clip.id
        assert np.max(np.abs(read_audio(clip))) > 0.01, clip.id


def test_quiet_clip_peaks_near_minus_30_dbfs(committed):
    quiet = next(c for c in committed if c.kind == "quiet")
    peak_db = 20 * np.log10(np.max(np.abs(read_audio(quiet))))
    assert -31.0 < peak_db < -29.0


def test_dialogue_turns_alternate_with_known_gaps(committed):
    for clip in (c for c in committed if c.kind == "dialogue"):
        turns = clip.turns
        assert turns and len(turns) >= 2
        assert clip.text == " ".join(t["text"] for t in turns)
        speakers = [t["speaker"] for t in turns]
        assert all(a != b for a, b in zip(speakers, speakers[1:])), clip.id
        audio = read_audio(clip)
        for before, after in zip(turns, turns[1:]):
            assert 0.65 <= after["start"] - before["end"] <= 1.05, clip.id
            gap = audio[round(before["end"] * 16000) : round(after["start"] * 16000)]
            assert np.max(np.abs(gap)) == 0.0  # the pauses are true silence
        for turn in turns:
            voiced = audio[round(turn["start"] * 16000) : round(turn["end"] * 16000)]
            assert np.max(np.abs(voiced)) > 0.1


def test_manifest_sources_say_how_each_clip_was_made():
    entries = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
    for entry in entries:
        assert entry["source"], entry["id"]
        assert entry["file"] == f"{entry['id']}.wav"


# ------------------------------------------------------------------ bad manifests


def _tone(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _entry(clip_id: str = "hello", **extra) -> dict:
    entry = {"id": clip_id, "file": f"{clip_id}.wav", "seconds": 1.0, "language": "en", "voice": "test", "kind": "clean", "text": "hello", "source": "test"}
    entry.update(extra)
    return entry


def _clips_dir(tmp_path: Path, entries, wavs=("hello",)) -> Path:
    for name in wavs:
        write_wav(tmp_path / f"{name}.wav", _tone())
    (tmp_path / "manifest.json").write_text(entries if isinstance(entries, str) else json.dumps(entries), encoding="utf-8")
    return tmp_path


def _error(directory: Path) -> str:
    with pytest.raises(DvmError) as info:
        load_clips(directory)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_valid_minimal_directory(tmp_path):
    (clip,) = load_clips(_clips_dir(tmp_path, [_entry()]))
    assert clip.id == "hello" and clip.seconds == pytest.approx(1.0) and clip.text == "hello"
    assert clip.path == tmp_path / "hello.wav"
    assert clip.turns is None


def test_missing_and_null_text_mean_not_scored(tmp_path):
    entry_missing = _entry("a")
    del entry_missing["text"]
    clips = load_clips(_clips_dir(tmp_path, [entry_missing, _entry("b", text=None), _entry("c", text="")], wavs=("a", "b", "c")))
    assert [c.text for c in clips] == [None, None, ""]
    assert [c.scored for c in clips] == [False, False, True]
    assert [c.expects_silence for c in clips] == [False, False, True]


def test_speaker_is_accepted_for_voice_and_seconds_is_optional(tmp_path):
    entry = _entry(speaker="Alice")
    del entry["voice"], entry["seconds"]
    (clip,) = load_clips(_clips_dir(tmp_path, [entry]))
    assert clip.voice == "Alice" and clip.seconds == pytest.approx(1.0)


def test_missing_directory(tmp_path):
    assert "not found" in _error(tmp_path / "nope")


def test_missing_manifest(tmp_path):
    assert "manifest.json" in _error(tmp_path)


def test_malformed_json_names_the_line(tmp_path):
    message = _error(_clips_dir(tmp_path, '[{"id": "hello",\n "file": }]'))
    assert "manifest.json" in message and "not valid JSON" in message and "line 2" in message


def test_manifest_must_be_a_list(tmp_path):
    assert "JSON list" in _error(_clips_dir(tmp_path, {"id": "hello"}))


def test_empty_manifest(tmp_path):
    assert "no clips" in _error(_clips_dir(tmp_path, []))


def test_entry_that_is_not_an_object(tmp_path):
    message = _error(_clips_dir(tmp_path, [_entry(), "oops"]))
    assert "entry 1" in message and "object" in message


def test_missing_required_key_names_the_entry(tmp_path):
    entry = _entry()
    del entry["file"]
    message = _error(_clips_dir(tmp_path, [entry]))
    assert "entry 0 ('hello')" in message and "'file'" in message


def test_missing_wav_names_the_entry(tmp_path):
    message = _error(_clips_dir(tmp_path, [_entry(), _entry("gone")]))
    assert "entry 1 ('gone')" in message and "not found" in message and "gone.wav" in message


def test_corrupt_wav_names_the_entry(tmp_path):
    directory = _clips_dir(tmp_path, [_entry(), _entry("broken")])
    (directory / "broken.wav").write_bytes(b"this is not a wav file at all" * 10)
    message = _error(directory)
    assert "entry 1 ('broken')" in message and "broken.wav" in message and "not readable audio" in message


def test_truncated_wav_names_the_entry(tmp_path):
    directory = _clips_dir(tmp_path, [_entry()])
    data = (directory / "hello.wav").read_bytes()
    (directory / "hello.wav").write_bytes(data[: len(data) // 2])
    message = _error(directory)
    assert "'hello'" in message and "truncated" in message


def test_other_rates_and_stereo_are_read_as_16k_mono(tmp_path):
    directory = _clips_dir(tmp_path, [_entry(), _entry("stereo")])
    write_wav(directory / "hello.wav", _tone(rate=44100), rate=44100)
    with wave.open(str(directory / "stereo.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(np.repeat((_tone(rate=48000) * 32767).astype("<i2"), 2).tobytes())
    clips = load_clips(directory)
    assert [c.seconds for c in clips] == [pytest.approx(1.0), pytest.approx(1.0)]
    for clip in clips:
        audio = read_audio(clip)
        assert abs(len(audio) - 16000) <= 16 and np.max(np.abs(audio)) > 0.25


def test_a_manifest_needs_only_id_file_and_text(tmp_path):
    directory = _clips_dir(tmp_path, [{"id": "hello", "file": "hello.wav", "text": "hello"}])
    (clip,) = load_clips(directory)
    assert (clip.language, clip.kind, clip.tier, clip.timed) == ("en", "speech", "speech", True)
    assert clip.seconds == pytest.approx(1.0) and clip.text == "hello" and clip.voice == "" and clip.source == ""


def test_tier_defaults_follow_the_kind_and_can_be_named(tmp_path):
    entries = [_entry("a", kind="clean"), _entry("b", kind="human"), _entry("c", kind="codec"), _entry("d", tier="mine", timed=False)]
    clips = load_clips(_clips_dir(tmp_path, entries, wavs="abcd"))
    assert [c.tier for c in clips] == ["tts", "real", "real-opus", "mine"]
    assert [c.timed for c in clips] == [True, True, True, False]


def test_timed_must_be_a_boolean(tmp_path):
    assert "'timed'" in _error(_clips_dir(tmp_path, [_entry(timed="no")]))


def test_sidecar_pairs_without_a_manifest(tmp_path):
    from dvm.harness.clips import write_audio

    write_audio(tmp_path / "alpha.wav", _tone(2.0))
    (tmp_path / "alpha.txt").write_text("Alpha says\nhello.\n", encoding="utf-8")
    write_audio(tmp_path / "beta.flac", _tone(1.5))
    (tmp_path / "beta.txt").write_text("beta", encoding="utf-8")
    write_audio(tmp_path / "gamma.wav", _tone(1.0))  # no text: timed, not scored
    (tmp_path / "notes.txt").write_text("not a clip", encoding="utf-8")
    clips = load_clips(tmp_path)
    assert [c.id for c in clips] == ["alpha", "beta", "gamma"]
    assert [c.text for c in clips] == ["Alpha says hello.", "beta", None]
    assert [round(c.seconds, 2) for c in clips] == [2.0, 1.5, 1.0]
    assert all(c.language == "en" and c.kind == "speech" for c in clips)


def test_empty_directory_without_manifest(tmp_path):
    message = _error(tmp_path)
    assert "manifest.json" in message and "no audio files" in message


def test_tier_subdirectories_are_read_after_the_top_level(tmp_path):
    top = _clips_dir(tmp_path, [_entry("top")], wavs=("top",))
    sub = top / "extra"
    sub.mkdir()
    _clips_dir(sub, [{"id": "deep", "file": "deep.wav", "text": "deep", "tier": "real", "timed": False}], wavs=("deep",))
    clips = load_clips(top)
    assert [(c.id, c.tier, c.path.parent.name) for c in clips] == [("top", "tts", top.name), ("deep", "real", "extra")]
    _clips_dir(sub, [{"id": "top", "file": "deep.wav", "text": "x"}], wavs=("deep",))
    assert "appears twice" in _error(top)


def test_declared_seconds_must_match(tmp_path):
    message = _error(_clips_dir(tmp_path, [_entry(seconds=10.0)]))
    assert "'hello'" in message and "'seconds' is 10.0" in message


def test_text_must_be_a_string(tmp_path):
    message = _error(_clips_dir(tmp_path, [_entry(text=42)]))
    assert "'hello'" in message and "'text'" in message


def test_duplicate_ids(tmp_path):
    message = _error(_clips_dir(tmp_path, [_entry(), _entry()]))
    assert "entry 1 ('hello')" in message and "duplicate" in message


def test_bad_turns_name_the_entry(tmp_path):
    turns = [{"speaker": "A", "start": 0.1, "end": 0.5, "text": "hi"}, {"speaker": "B", "start": 0.4, "end": 0.9, "text": "yo"}]
    message = _error(_clips_dir(tmp_path, [_entry(turns=turns)]))
    assert "'hello'" in message and "turn 1" in message
    outside = [{"speaker": "A", "start": 0.1, "end": 5.0, "text": "hi"}]
    assert "turn 0" in _error(_clips_dir(tmp_path, [_entry(turns=outside)]))


# ------------------------------------------------------------------ read_audio / write_wav


def test_write_then_read_round_trip(tmp_path):
    tone = _tone()
    write_wav(tmp_path / "t.wav", tone)
    back = read_audio(tmp_path / "t.wav")
    assert back.dtype == np.float32 and len(back) == len(tone)
    assert np.max(np.abs(back - tone)) < 1e-4


def test_read_audio_resamples_other_formats(tmp_path):
    rate = 44100
    t = np.arange(rate) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)
    pcm = (stereo * 32767).astype("<i2")
    with wave.open(str(tmp_path / "cd.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    audio = read_audio(tmp_path / "cd.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 32
    assert 0.2 < np.max(np.abs(audio)) < 0.5  # level kept (within the resampler's mixing)


def test_read_audio_errors_are_dvm_errors(tmp_path):
    with pytest.raises(DvmError, match="no such file"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"\x00\x01junk" * 100)
    with pytest.raises(DvmError, match="cannot decode"):
        read_audio(tmp_path / "junk.wav")


def test_write_wav_clips_out_of_range_samples(tmp_path):
    write_wav(tmp_path / "loud.wav", np.array([2.0, -2.0, 0.5], dtype=np.float32))
    assert read_audio(tmp_path / "loud.wav").tolist() == pytest.approx([32767 / 32768, -1.0, 0.5], abs=1e-4)


# ------------------------------------------------------------------ generator parts that need no TTS engine


def test_pink_noise_is_seeded_and_unit_rms():
    a, b, c = clipgen.pink_noise(16000, seed=1), clipgen.pink_noise(16000, seed=1), clipgen.pink_noise(16000, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)


def test_add_noise_hits_the_snr():
    speech = _tone(2.0)
    noisy = clipgen.add_noise(speech, 20, seed=3)
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(20, abs=0.5)
    assert np.array_equal(noisy, clipgen.add_noise(speech, 20, seed=3))


def test_opus_round_trip_keeps_length_level_and_timing():
    speech = np.concatenate([np.zeros(8000, np.float32), _tone(1.0), np.zeros(8000, np.float32)])
    out = clipgen.opus_round_trip(speech)
    assert out.shape == speech.shape and out.dtype == np.float32
    gain = float(out @ speech / (speech @ speech))
    assert 0.8 < gain < 1.2
    onset = int(np.argmax(np.abs(out) > 0.05))
    assert abs(onset - 8000) < 80  # within 5 ms: the codec delay is compensated


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(clipgen.shutil, "which", lambda name: None)
    missing = clipgen.missing_tools()
    assert any(m.startswith("espeak-ng") for m in missing)
    assert any("text2wave (apt package festival)" == m for m in missing)
    assert any(m.startswith("sox") for m in missing)


def test_generator_reports_missing_tools_on_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(clipgen.shutil, "which", lambda name: None)
    assert clipgen.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dvm: error: clip generator needs: ") and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"), reason="espeak-ng and sox not installed")
def test_synthesis_gives_trimmed_normalised_speech(tmp_path):
    audio = clipgen.synthesize(clipgen.Say("espeak-ng", "en-us", "Hello there."), tmp_path)
    assert audio.dtype == np.float32
    assert float(np.max(np.abs(audio))) == pytest.approx(clipgen.PEAK, rel=1e-3)
    assert 0.3 < len(audio) / 16000 < 3.0


def test_bench_selects_tiers_and_keeps_quick_runs_timed(tmp_path):
    from dvm.harness.bench.plan import select_clips

    top = _clips_dir(tmp_path, [_entry("tts-a", kind="clean"), _entry("jfk", kind="human"), _entry("quiet", kind="silence", text="")],
                     wavs=("tts-a", "jfk", "quiet"))
    sub = top / "real"
    sub.mkdir()
    _clips_dir(sub, [{"id": "r1", "file": "r1.wav", "text": "hi", "tier": "real", "timed": False},
                     {"id": "de", "file": "de.wav", "text": "hallo", "language": "de", "tier": "real", "timed": False}], wavs=("r1", "de"))
    clips = load_clips(top)
    assert [c.id for c in select_clips(clips, quick=False)] == ["tts-a", "jfk", "r1", "quiet"]  # English only
    assert [c.id for c in select_clips(clips, quick=True)] == ["tts-a", "jfk", "quiet"]  # untimed tiers left out
    assert [c.id for c in select_clips(clips, quick=False, tiers=["real"])] == ["jfk", "r1"]
    with pytest.raises(DvmError, match="no clips of tier nope"):
        select_clips(clips, quick=False, tiers=["nope"])
