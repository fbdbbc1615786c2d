"""The real-speech tier: the committed clips and manifest, its generator's parts, the PyPI fetcher
(against a loopback index), Discord-style Opus with packet loss, and long-form transcription."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from dvm.harness import degrade, pypi, realtier, scoring
from dvm.harness.clips import REAL_TIERS, load_clips, read_audio
from dvm.errors import DvmError

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "audio" / "real"


@pytest.fixture(scope="module")
def tier():
    return load_clips(REAL)


def test_real_tier_is_big_enough_and_english_first(tier):
    real_en = [c for c in tier if c.tier == "real" and c.language == "en"]
    assert len(real_en) >= 20
    assert sum(c.seconds for c in real_en) >= 180
    assert len({c.voice for c in real_en}) >= 5  # several speakers and styles, not one reader
    assert {c.language for c in tier} >= {"en", "es", "sv"}
    assert all(not c.timed for c in tier)  # scored once; the RTF figures stay on the ~10 s clips


def test_every_clip_names_its_package_path_and_licence():
    entries = json.loads((REAL / "manifest.json").read_text(encoding="utf-8"))
    packages = {f"{p.name}=={p.version}" for p in realtier.PACKAGES}
    for entry in entries:
        assert entry["package"] in packages, entry["id"]
        assert entry["path"] and entry["licence"], entry["id"]
        assert entry["text"].strip(), entry["id"]
        assert entry["package"].split("==")[0] in entry["source"], entry["id"]


def test_each_english_utterance_has_an_opus_and_a_noisy_copy(tier):
    by_id = {c.id: c for c in tier}
    originals = [c for c in tier if c.tier == "real" and c.language == "en"]
    for clip in originals:
        for suffix, tier_name in (("-opus", "real-opus"), ("-noisy", "noisy")):
            copy = by_id[clip.id + suffix]
            assert copy.tier == tier_name and copy.text == clip.text
            assert copy.seconds == pytest.approx(clip.seconds, abs=0.002)
    clean, lossy = read_audio(originals[0]), read_audio(by_id[originals[0].id + "-opus"])
    assert np.corrcoef(clean, lossy)[0, 1] > 0.8  # the same speech, not a different file


def test_long_clip_is_over_a_minute_of_unused_utterances(tier):
    (long_clip,) = [c for c in tier if c.tier == "long"]
    assert long_clip.seconds >= 60
    assert long_clip.text == " ".join(t["text"] for t in long_clip.turns)
    used = {c.text for c in tier if c.tier == "real"}
    assert not used & {t["text"] for t in long_clip.turns}  # not a copy of clips scored elsewhere


def test_manifest_matches_the_generator():
    entries = json.loads((REAL / "manifest.json").read_text(encoding="utf-8"))
    ids = {e["id"] for e in entries}
    for utt in realtier.UTTERANCES:
        if utt.use == "long":
            continue
        assert utt.id in ids
        if utt.use == "tier":
            assert {utt.id + "-opus", utt.id + "-noisy"} <= ids


def test_transcript_clean_up_is_limited_and_explained():
    assert realtier.clean_text("so <VOCNOISE> we [adif] go") == "so we go"
    assert realtier.clean_text("we're just yknow there") == "we're just you know there"
    assert realtier.clean_text("m f a is like putty") == "MFA is like putty"
    assert realtier.clean_text("A plain sentence, kept as is.") == "A plain sentence, kept as is."
    assert realtier.clean_text("dated (which also was printed) then") == "dated which also was printed then"
    assert scoring.normalize(realtier.clean_text("a (spoken aside) b")).split() == ["a", "spoken", "aside", "b"]


# ------------------------------------------------------------------ Opus with packet loss


def test_opus_loss_is_concealed_not_silenced(jfk_path):
    speech = read_audio(jfk_path)
    clean = degrade.opus_round_trip(speech)
    lossy = degrade.opus_round_trip(speech, loss=0.05, seed=3)
    assert len(clean) == len(lossy) == len(speech)
    packets, _, _ = degrade.opus_packets(speech, 32_000, fec=True)
    lost = sorted(degrade.lost_packets(len(packets), 0.05, 3))
    assert 0.02 * len(packets) < len(lost) < 0.1 * len(packets)
    assert degrade.lost_packets(len(packets), 0.05, 3) == set(lost)  # the seed decides
    # a lost 20 ms frame in the middle of speech is rebuilt (FEC/PLC), not left silent
    voiced = [i for i in lost if np.sqrt(np.mean(clean[i * 320:(i + 1) * 320] ** 2)) > 0.02]
    assert voiced
    for i in voiced:
        assert np.sqrt(np.mean(lossy[i * 320:(i + 1) * 320] ** 2)) > 0.002
    assert np.corrcoef(clean, lossy)[0, 1] > 0.9


# ------------------------------------------------------------------ the PyPI fetcher, on loopback

SDIST = b"pretend sdist bytes" * 1000
SDIST_SHA = hashlib.sha256(SDIST).hexdigest()


class _Index(http.server.BaseHTTPRequestHandler):
    index_sha = SDIST_SHA
    hits: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Index.hits.append(self.path)
        if self.path == "/simple/some-pkg/":
            assert "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", "")
            body = json.dumps({"meta": {"api-version": "1.0"}, "name": "some-pkg", "files": [
                {"filename": "some_pkg-1.0-py3-none-any.whl", "url": "../../files/w.whl", "hashes": {"sha256": "00"}},
                {"filename": "some_pkg-1.0.tar.gz", "url": "../../files/some_pkg-1.0.tar.gz", "hashes": {"sha256": _Index.index_sha}},
                {"filename": "some_pkg-1.01.tar.gz", "url": "../../files/other.tar.gz", "hashes": {"sha256": "00"}},
            ]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
        elif self.path == "/files/some_pkg-1.0.tar.gz":
            body = SDIST
            self.send_response(200)
        else:
            self.send_error(404)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def index(monkeypatch, tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Index.hits, _Index.index_sha = [], SDIST_SHA
    monkeypatch.setenv("DVM_PYPI_INDEX", f"http://127.0.0.1:{httpd.server_address[1]}/simple/")
    monkeypatch.setenv("DVM_HOME", str(tmp_path / "home"))
    yield
    httpd.shutdown()


def test_fetch_finds_the_sdist_verifies_and_caches(index):
    path = pypi.fetch("Some_Pkg", "1.0", SDIST_SHA)
    assert path.name == "some_pkg-1.0.tar.gz" and path.read_bytes() == SDIST
    downloads = [h for h in _Index.hits if h.startswith("/files/")]
    assert downloads == ["/files/some_pkg-1.0.tar.gz"]  # not the wheel, not 1.01
    assert pypi.fetch("some-pkg", "1.0", SDIST_SHA) == path
    assert len(_Index.hits) == 2  # the second call used the cache


def test_fetch_refuses_a_file_that_is_not_the_pinned_one(index):
    _Index.index_sha = "0" * 64  # the index and our pin agree, the bytes do not: nothing is kept
    with pytest.raises(DvmError, match="checksum mismatch"):
        pypi.fetch("some-pkg", "1.0", "0" * 64)
    _Index.index_sha = "f" * 64  # the index names another file than the one we pinned: not even downloaded
    hits = len(_Index.hits)
    with pytest.raises(DvmError, match="the index says sha256"):
        pypi.fetch("some-pkg", "1.0", SDIST_SHA)
    assert len(_Index.hits) == hits + 1
    assert not [p for p in pypi.cache_dir().rglob("*") if p.is_file()]


def test_fetch_errors_are_one_line(index, monkeypatch):
    with pytest.raises(DvmError, match="no sdist of some-pkg 2.0"):
        pypi.fetch("some-pkg", "2.0", SDIST_SHA)
    with pytest.raises(DvmError, match="not found"):
        pypi.fetch("absent", "1.0", SDIST_SHA)
    monkeypatch.setenv("DVM_PYPI_INDEX", "http://127.0.0.1:9/simple")
    with pytest.raises(DvmError, match="unreachable") as info:
        pypi.fetch("some-pkg", "1.0", SDIST_SHA)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ long-form audio


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["whispercpp", "faster-whisper"])
def test_a_clip_longer_than_30_s_is_transcribed_and_scored(tier, engine_name):
    from dvm.harness import engines
    from dvm.harness.engines import EngineConfig

    (long_clip,) = [c for c in tier if c.tier == "long"]
    config = EngineConfig(engine=engine_name, quant="q8_0" if engine_name == "whispercpp" else "int8", audio_ctx="fit")
    engine = engines.create(config)
    result = engine.transcribe(read_audio(long_clip))
    engine.close()
    assert result.audio_seconds > 60
    assert result.segments[-1].end > 60  # the engine went on past the first 30 s window
    accuracy = scoring.score(long_clip.text, result.text, "en", long_clip.seconds)
    assert accuracy["ref_words"] > 150
    assert accuracy["wer"] < 0.25, result.text


def test_real_tiers_are_the_ones_the_choice_uses():
    assert REAL_TIERS == ("real", "real-opus", "noisy", "long")
