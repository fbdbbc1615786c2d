"""The real Discord adapter + real discord.py against a loopback fake Discord that speaks DAVE for real.

REST, gateway and voice gateway over TLS (a CA made at test time, trusted via SSL_CERT_FILE), UDP IP
discovery, MLS external sender, fake users that are real davey sessions: every Opus frame a fake
user speaks is DAVE-encrypted, then transport-encrypted. The MCP app drives it through the SDK's
in-memory client; whisper.cpp (tiny.en) transcribes.

What only a live test can prove (``test_live_discord``, opt-in): that Discord's real voice servers
behave like this fake (op ordering, SFU passthrough and silence, key rotations under load, the
close codes and rate limits of the real gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from dvm.harness import engines, scoring
from dvm.harness.clips import load_clips
from dvm.harness.engines import EngineConfig
from dvm.server.app import build_app
from dvm.server.config import Settings
from dvm.server.pipeline import Pipeline
from dvm.server.store import Store
from tests.fakediscord import FakeDiscord

discord_client = pytest.importorskip("dvm.server.voice.discord_client")
DiscordVoice = discord_client.DiscordVoice

pytestmark = pytest.mark.anyio

AES, XCHACHA = "aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"
WER_LIMIT = 0.25


def clip(clip_id: str):
    return next(c for c in load_clips() if c.id == clip_id)


@pytest.fixture
def make_fake(tmp_path, monkeypatch):
    fakes = []

    def make(**kwargs) -> FakeDiscord:
        fake = FakeDiscord(tmp_path / f"fake{len(fakes)}", **kwargs).start()
        fakes.append(fake)
        monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_path))
        return fake

    yield make
    for fake in fakes:
        fake.stop()


def adapter_for(fake: FakeDiscord, user: str = "alice", settings: Settings | None = None) -> DiscordVoice:
    settings = settings or Settings()
    settings.discord_token = fake.token
    settings.discord_user_id = str(fake.user(user).id)
    return DiscordVoice(settings, env={"DISCORD_API_BASE": fake.api_base, "DISCORD_GATEWAY_URL": fake.gateway_url})


async def call(client, tool, args=None):
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, result.content
    return result.structured_content


@contextlib.asynccontextmanager
async def served(tmp_path: Path, fake: FakeDiscord, user: str = "alice"):
    """Store + pipeline (whisper.cpp tiny.en) + adapter + MCP app, through the SDK's in-memory client."""
    settings = Settings(engine=EngineConfig(engine="whispercpp", model="tiny.en", quant="q8_0", threads=2,
                                            audio_ctx="fit"), silence_timeout_ms=1000, min_buffer_ms=250)
    store = Store(tmp_path / "transcripts.db")
    pipeline = Pipeline(lambda: engines.create(settings.engine), store, settings)
    await anyio.to_thread.run_sync(pipeline.start)
    voice = adapter_for(fake, user, settings)
    try:
        async with Client(build_app(store, pipeline, voice)) as client:
            yield client, voice, pipeline
    finally:
        await voice.close()
        await anyio.to_thread.run_sync(lambda: pipeline.stop(drain=False))
        store.close()


async def wait_for_lines(client, session_id: str, pipeline: Pipeline, speakers: set[str], timeout: float = 40.0):
    """Poll get_transcript until every speaker has a line and nothing new came for a while."""
    deadline = time.monotonic() + timeout
    last_count, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        transcript = await call(client, "get_transcript", {"sessionId": session_id})
        lines = [line for line in transcript["lines"] if line["status"] == "ok"]
        stats = pipeline.stats()
        if len(lines) != last_count or stats["queued"] or stats["in_flight"]:
            last_count, stable_since = len(lines), time.monotonic()
        elif speakers <= {line["speaker_id"] for line in lines} and time.monotonic() - stable_since > 2.5:
            return transcript
        await anyio.sleep(0.25)
    return await call(client, "get_transcript", {"sessionId": session_id})


async def session_through_mcp(client, fake: FakeDiscord, pipeline: Pipeline, speeches: list[tuple[str, str]],
                              lines_timeout: float = 40.0):
    """join_my_voice_channel, the fake users speak in turn, lines arrive, status, leave: what the tools said."""
    t0 = time.monotonic()
    joined = await call(client, "join_my_voice_channel")
    await anyio.to_thread.run_sync(fake.wait_media_ready, 30)
    t_joined = time.monotonic()
    for user, clip_id in speeches:
        await anyio.to_thread.run_sync(lambda u=user, c=clip_id: fake.speak(u, clip(c).path))
        await anyio.sleep(1.5)  # a pause between turns, longer than the silence timeout
    t_spoken = time.monotonic()
    speakers = {str(fake.user(u).id) for u, _ in speeches}
    live = await wait_for_lines(client, joined["session_id"], pipeline, speakers, lines_timeout)
    t_lines = time.monotonic()
    status = await call(client, "get_bot_status")
    left = await call(client, "leave_voice_channel")
    await anyio.to_thread.run_sync(pipeline.wait_idle)
    final = await call(client, "get_transcript", {"sessionId": joined["session_id"]})
    print(f"join {t_joined - t0:.1f} s, speak {t_spoken - t_joined:.1f} s, lines {t_lines - t_spoken:.1f} s;",
          [(line["speaker_name"], round(line["start"], 1), line["text"]) for line in final["lines"]])
    return {"joined": joined, "live": live, "status": status, "left": left, "final": final}


def text_of(transcript: dict, user_id: int) -> str:
    return " ".join(line["text"] for line in transcript["lines"]
                    if line["speaker_id"] == str(user_id) and line["status"] == "ok").strip()


def wer(reference: str, hypothesis: str) -> float:
    value = scoring.score(reference, hypothesis)["wer"]
    return 1.0 if value is None else value


# ---------------------------------------------------------------------------- end to end, transcribed


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", [
    pytest.param({}, id="dave-aes256gcm"),
    pytest.param({"modes": (XCHACHA,)}, id="dave-xchacha20"),
    pytest.param({"dave": False}, id="dave-off"),
    pytest.param({"commit_winner": "bot"}, id="dave-bot-commit-wins"),
    pytest.param({"corrupt_welcomes": 1}, id="dave-op31-rebuild"),
])
async def test_transcript_end_to_end(case, make_fake, tmp_path):
    fake = make_fake(**case)
    async with served(tmp_path, fake) as (client, voice, pipeline):
        out = await session_through_mcp(client, fake, pipeline, [("alice", "en-jfk")])
    alice = fake.user("alice")
    live = text_of(out["live"], alice.id)
    assert wer(clip("en-jfk").text, live) <= WER_LIMIT, (live, out["status"])
    assert {line["speaker_name"] for line in out["live"]["lines"]} == {"Alice"}
    discord = out["status"]["discord"]
    assert discord["connected"] and discord["channel"]["name"] == "General"
    assert discord["transport_mode"] == case.get("modes", (AES,))[0]
    receive = discord["receive"]
    assert receive["dave_failed_total"] == 0 and receive["transport_failed"] == 0
    assert any(s["user_id"] == str(alice.id) and s["name"] == "Alice" for s in discord["speakers"])
    if case.get("dave", True):
        assert discord["dave"]["protocol_version"] == 1 and discord["dave"]["ready"]
        assert receive["dave_decrypted"] >= 500  # 11 s of speech, 20 ms frames
        assert receive["dave_off"] == 0
    else:
        assert discord["dave"]["protocol_version"] == 0
        assert receive["dave_off"] >= 500 and receive["dave_decrypted"] == 0
    if case.get("corrupt_welcomes"):
        assert any("op 31" in e for e in fake.events) and any("rebuild" in e for e in fake.events), fake.events
        assert discord["dave"]["epoch"] == 2
    if case.get("commit_winner") == "bot":
        assert "the bot won the commit race" in fake.events
    # leave_voice_channel ends the session, and the transcript stays
    assert out["left"]["voice"]["left"] is True and out["left"]["session"]["status"] == "ended"
    assert out["final"]["session"]["status"] == "ended"
    assert wer(clip("en-jfk").text, text_of(out["final"], alice.id)) <= WER_LIMIT


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_without_dave_decryption_the_transcript_is_lost(make_fake, tmp_path, monkeypatch):
    """Proof that DAVE is really on: skip our DAVE decrypt step and the same check fails."""
    # frames go to Opus still E2EE-encrypted
    monkeypatch.setattr("dvm.server.voice.discord_client.receive.VoiceReceive.dave_session", lambda self: None)
    fake = make_fake()
    async with served(tmp_path, fake) as (client, voice, pipeline):
        out = await session_through_mcp(client, fake, pipeline, [("alice", "en-jfk")], lines_timeout=10)
    hypothesis = text_of(out["final"], fake.user("alice").id)
    assert wer(clip("en-jfk").text, hypothesis) > WER_LIMIT, hypothesis
    assert out["status"]["discord"]["receive"]["dave_decrypted"] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_speakers_alternating_are_attributed(make_fake, tmp_path):
    fake = make_fake(users=[("alice", "General"), ("bob", "General")])  # they already hold a DAVE group
    async with served(tmp_path, fake) as (client, voice, pipeline):
        out = await session_through_mcp(client, fake, pipeline, [("alice", "en-jfk"), ("bob", "en-espeak-us"),
                                                                  ("alice", "en-festival-slt")])
    alice, bob = fake.user("alice"), fake.user("bob")
    transcript = out["final"]
    assert {line["speaker_name"] for line in transcript["lines"] if line["status"] == "ok"} == {"Alice", "Bob"}
    assert wer(clip("en-jfk").text + " " + clip("en-festival-slt").text, text_of(transcript, alice.id)) <= WER_LIMIT
    assert wer(clip("en-espeak-us").text, text_of(transcript, bob.id)) <= WER_LIMIT
    # in speaking order: Alice, Bob, Alice
    order = [line["speaker_name"] for line in sorted(transcript["lines"], key=lambda x: x["start"])]
    turns = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert turns == ["Alice", "Bob", "Alice"], order
    assert out["status"]["discord"]["dave"]["epoch"] == 2  # users' group (epoch 1), then the bot's Add


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_voice_reconnect_keeps_the_session_and_its_lines(make_fake, tmp_path):
    fake = make_fake()
    async with served(tmp_path, fake) as (client, voice, pipeline):
        joined = await call(client, "join_my_voice_channel")
        await anyio.to_thread.run_sync(fake.wait_media_ready, 30)
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", clip("en-jfk").path))
        alice = str(fake.user("alice").id)
        before = await wait_for_lines(client, joined["session_id"], pipeline, {alice})
        fake.kick_voice(4006)  # voice server hiccup: discord.py reconnects, new key, DAVE group rebuilt
        await wait_until(lambda: fake.voice_connections >= 2 and fake.voice is not None
                         and fake.voice.media_ready.is_set(), 30, "voice reconnect")
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", clip("en-festival-slt").path))
        await anyio.sleep(1.5)
        after = await wait_for_lines(client, joined["session_id"], pipeline, {alice})
        status = await call(client, "get_bot_status")
        await call(client, "leave_voice_channel")
    assert status["discord"]["reconnects"]["voice"] >= 1 and status["session"]["status"] == "active"
    assert len(after["lines"]) > len(before["lines"])
    assert after["lines"][:len(before["lines"])] == before["lines"]  # nothing finished was lost
    reference = clip("en-jfk").text + " " + clip("en-festival-slt").text
    assert wer(reference, text_of(after, int(alice))) <= WER_LIMIT


# ---------------------------------------------------------------------------- adapter behaviour, no transcription


class Collector:
    def __init__(self):
        self.frames: dict[tuple[str, str], int] = {}

    def __call__(self, speaker_id: str, name: str, pcm: bytes) -> None:
        self.frames[(speaker_id, name)] = self.frames.get((speaker_id, name), 0) + len(pcm) // 3840


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(90)
async def test_receive_survives_a_voice_reconnect_and_a_gateway_drop(make_fake):
    fake = make_fake(speed=8.0)
    voice = adapter_for(fake)
    sink = Collector()
    try:
        await voice.join_user_channel(sink)
        await anyio.to_thread.run_sync(fake.wait_media_ready, 30)
        alice = str(fake.user("alice").id)
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", clip("en-jfk").path, announce_after=3))
        await wait_until(lambda: sink.frames.get((alice, "Alice"), 0) >= 550, what="first clip")
        fake.kick_voice(4006)  # the voice server drops the bot: discord.py reconnects, DAVE group rebuilt
        await wait_until(lambda: fake.voice_connections >= 2 and fake.voice is not None
                         and fake.voice.media_ready.is_set(), 30, "voice reconnect")
        fake.drop_gateway()  # and the main gateway hiccups: discord.py resumes
        await wait_until(lambda: fake.counters["resume"] + fake.counters["identify"] >= 2, 30, "gateway back")
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", clip("en-jfk").path))
        await wait_until(lambda: sink.frames.get((alice, "Alice"), 0) >= 1100, what="second clip")
        status = voice.status()
        assert status["connected"] and status["reconnects"]["voice"] >= 1 and status["reconnects"]["gateway"] >= 1
        assert status["dave"]["protocol_version"] == 1 and status["dave"]["epoch"] >= 2
        receive = status["receive"]
        assert receive["dave_decrypted"] >= 1100 and receive["unknown_ssrc_held"] >= 1
        assert receive["dave_failed_total"] == 0, receive["dave_failed"]
    finally:
        await voice.close()


@pytest.mark.timeout(90)
async def test_key_rotation_and_a_missed_commit_answered_by_op31(make_fake):
    fake = make_fake(speed=8.0)
    voice = adapter_for(fake)
    sink = Collector()
    jfk = clip("en-jfk").path
    try:
        await voice.join_user_channel(sink)
        await anyio.to_thread.run_sync(fake.wait_media_ready, 30)
        alice = str(fake.user("alice").id)
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", jfk))
        fake.rotate_keys(tell_bot=True)  # someone joins: op 29 commit, op 23/22 transition
        await wait_until(lambda: voice.status()["dave"]["epoch"] == 2, what="the announced commit")
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", jfk))
        await wait_until(lambda: sink.frames.get((alice, "Alice"), 0) >= 1100, what="two clips")
        assert voice.status()["receive"]["dave_failed_total"] == 0
        fake.rotate_keys(tell_bot=False)  # the bot misses a commit: alice's frames stop decrypting
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", jfk))
        await wait_until(lambda: any("op 31" in e for e in fake.events) and fake.voice.media_ready.is_set(),
                         what="the rebuild")
        await anyio.to_thread.run_sync(lambda: fake.speak("alice", jfk))
        status = voice.status()
        receive = status["receive"]
        assert status["dave_rebuild_requests"] == 1 and receive["dave_failure_runs"] >= 1
        assert receive["dave_failed"]["no_key"] >= 36  # counted and dropped, never fed to Opus
        assert status["dave"]["epoch"] == 4 and status["connected"]
        assert sink.frames[(alice, "Alice")] >= 1100 + 550  # the last clip came through whole after the rebuild
    finally:
        await voice.close()


@pytest.mark.timeout(90)
async def test_follow_me_moves_with_the_user_and_leaves_when_they_leave(make_fake):
    fake = make_fake(dave=False)
    voice = adapter_for(fake)
    events = []
    voice.on_event = events.append
    try:
        joined = await voice.join_user_channel(Collector())
        assert joined["channel_name"] == "General" and joined["guild_name"] == "Fake Guild"
        assert (await voice.set_follow(True))["follow"] is True
        fake.move_user("alice", "Quiet Room")
        await wait_until(lambda: (voice.status().get("channel") or {}).get("name") == "Quiet Room"
                         and voice.status()["connected"], 30, "the bot to follow")
        fake.move_user("alice", None)
        await wait_until(lambda: not voice.status()["connected"] and len(events) == 2, 30, "the bot to leave")
        assert [e["event"] for e in events] == ["moved", "left"]
        assert events[0]["channel_name"] == "Quiet Room"
        assert fake.bot_voice is None
        fake.move_user("alice", "General")  # back in voice: following means joining again
        await wait_until(lambda: voice.status()["connected"] and len(events) == 3, 30, "the bot to rejoin")
        assert events[2] == {"event": "joined", **joined}
        assert (await voice.set_follow(False))["follow"] is False
    finally:
        await voice.close()


@pytest.mark.timeout(60)
async def test_join_errors_are_plain_messages(make_fake):
    from dvm.server.voice.base import VoiceError

    fake = make_fake(users=[("alice", None)])  # alice is in no voice channel
    voice = adapter_for(fake)
    try:
        with pytest.raises(VoiceError, match="not in a voice channel"):
            await voice.join_user_channel(Collector())
        with pytest.raises(VoiceError, match="not found"):
            await voice.join_channel("404", "1", Collector())
        with pytest.raises(VoiceError, match="not in a voice channel"):
            await voice.leave()
        joined = await voice.join_channel(str(fake.guild_id), str(fake.channels["Quiet Room"]), Collector())
        assert joined["channel_name"] == "Quiet Room"
        assert (await voice.leave())["left"] is True
    finally:
        await voice.close()
    bad = adapter_for(fake)
    bad.token = "wrong-token"
    with pytest.raises(VoiceError, match="rejected DISCORD_TOKEN"):
        await bad.join_user_channel(Collector())
    await bad.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_no_secret_in_any_output_of_a_full_session(make_fake, tmp_path, caplog, capsys):
    """A whole session (join, speech, status, transcript, export, leave, a rejected token) with every
    logger at DEBUG: the bot token and the voice session token appear in no log line, tool result,
    error text, repr or file the server wrote."""
    import logging

    caplog.set_level(logging.DEBUG)
    fake = make_fake()
    outputs, voice_tokens = [], []
    handed_out = fake.bot_voice_state

    async def record_voice_token(gw, d):
        await handed_out(gw, d)
        if fake.bot_voice:
            voice_tokens.append(fake.bot_voice["token"])

    fake.bot_voice_state = record_voice_token
    async with served(tmp_path, fake) as (client, voice, pipeline):
        out = await session_through_mcp(client, fake, pipeline, [("alice", "en-jfk")])
        outputs += [repr(voice), repr(pipeline.settings), str(pipeline.settings.describe()), str(pipeline.stats())]
        for fmt in ("json", "markdown", "text", "srt"):
            result = await client.call_tool("export_session", {"sessionId": out["joined"]["session_id"], "format": fmt})
            outputs.append(str(result.content))
        for tool, args in (("get_transcript", {"sessionId": "nope"}), ("join_specific_channel", {"guildId": "1", "channelId": "2"})):
            result = await client.call_tool(tool, args)
            outputs.append(str(result.content))
    secrets = [fake.token, *voice_tokens]
    assert voice_tokens, "the fake handed out no voice token: the check would prove nothing"
    bad = adapter_for(fake)
    bad.token = "wrong-token-" + os.urandom(4).hex()
    secrets.append(bad.token)
    try:
        await bad.join_user_channel(Collector())
    except Exception as exc:  # noqa: BLE001 - its text is what is checked
        outputs += [str(exc), repr(exc)]
    finally:
        await bad.close()
    captured = capsys.readouterr()
    mine = [r for r in caplog.records if not r.name.startswith("tests.")]  # the fake Discord may log its own secrets
    outputs += [str(out), captured.out, captured.err] + [r.getMessage() for r in mine]
    outputs += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file() and "fake" not in p.parts[-2]]
    assert len(mine) > 20  # the logs were really captured
    for secret in secrets:
        leaks = [o for o in outputs if secret in o]
        assert not leaks, f"a secret leaked into: {leaks[0][:300]}"


# ---------------------------------------------------------------------------- live (opt-in)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(not (os.environ.get("DVM_LIVE_DISCORD_TOKEN") and os.environ.get("DVM_LIVE_DISCORD_USER_ID")),
                    reason="set DVM_LIVE_DISCORD_TOKEN and DVM_LIVE_DISCORD_USER_ID (a user in a voice channel the "
                    "bot can join) to run against real Discord")
async def test_live_discord():
    """Against real Discord: join the user's channel, listen, and see DAVE negotiated (speak to see frames)."""
    settings = Settings(discord_token=os.environ["DVM_LIVE_DISCORD_TOKEN"],
                        discord_user_id=os.environ.get("DVM_LIVE_DISCORD_USER_ID"))
    voice = DiscordVoice(settings, env={})
    sink = Collector()
    try:
        joined = await voice.join_user_channel(sink)
        await anyio.sleep(float(os.environ.get("DVM_LIVE_LISTEN_S", "15")))
        status = voice.status()
        print(joined, status)
        assert status["connected"]
        assert status["dave"]["protocol_version"] >= 1  # Discord requires DAVE since 2026-03-02
        assert status["receive"].get("dave_failed_total", 0) <= status["receive"].get("dave_decrypted", 0)
        assert (await voice.leave())["left"] is True
    finally:
        await voice.close()
