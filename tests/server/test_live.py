"""Live captions: the sentence-end rule, the settings, and interim lines kept out of storage."""

from __future__ import annotations

from dvm.server import config, exports
from dvm.server.live import sentence_final


def test_sentence_final_needs_final_punctuation_and_no_dangling_word():
    assert sentence_final("And so my fellow Americans, ask not what your country can do for you.")
    assert sentence_final("Are you joining the call tonight?")
    assert not sentence_final("We walked along the river and")
    assert not sentence_final("I talked to Dr.")
    assert not sentence_final("so we went to the.")
    assert not sentence_final("Well...")
    assert not sentence_final("")


def test_live_settings_from_the_environment():
    s = config.load(env={"DVM_LIVE": "0", "AUDIO_SPECULATIVE_PAUSE_MS": "200", "AUDIO_EARLY_ENDPOINT_MS": "450"})
    assert s.live is False and s.speculative_pause_ms == 200 and s.early_endpoint_ms == 450
    assert config.load(env={}).live is True
    assert s.describe()["live"]["early_endpoint_ms"] == 450


def test_interim_lines_are_marked_and_follow_the_stored_ones():
    session = {"id": "s", "guild_name": "G", "channel_name": "C", "started_at": "2026-12-03T10:00:00+00:00", "ended_at": None}
    lines = [{"id": 1, "start": 1.0, "end": 2.0, "speaker_name": "Ann", "text": "Hello.", "status": "ok"}]
    text = exports.to_text(session, lines, [{"start": 3.0, "speaker_name": "Bob", "text": "I think we", "interim": True}])
    assert text.index("Ann: Hello.") < text.index("Bob (interim): I think we")
    assert "(interim)" not in exports.to_text(session, lines)


def test_interim_duty_is_a_share_of_one_core():
    import pytest

    from dvm.errors import DvmError

    assert config.load(env={}).interim_duty == 0.5
    assert config.load(env={"AUDIO_INTERIM_DUTY": "0.25"}).interim_duty == 0.25
    for bad in ("0", "1.5", "-1"):
        with pytest.raises(DvmError, match="AUDIO_INTERIM_DUTY must"):
            config.load(env={"AUDIO_INTERIM_DUTY": bad})
