"""The voice receive path with real parts: Opus packets encoded from fixture speech, real
transport keys (both AEAD modes), a real DAVE group from davey, our receiver in between."""

from __future__ import annotations

import dataclasses
import os
import struct
from types import SimpleNamespace

import numpy as np
import pytest

davey = pytest.importorskip("davey")
pytest.importorskip("nacl")

from dvm.server.voice import dave, opus, rtp, transport
from dvm.server.voice.receiver import Receiver, check_stats
from tests.conftest import FIXTURES
from tests.server.dave_helpers import ExternalSender, make_group, opus_frames, remove_member

CHANNEL = 1_234_567_890_123_456_789
BOT, ALICE, BOB = 111_111_111_111_111_111, 222_222_222_222_222_222, 333_333_333_333_333_333
SSRC_A, SSRC_B = 0x1000_0001, 0x2000_0002
MODES = transport.MODES


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return opus_frames(str(FIXTURES / "en-jfk.wav"), seconds=2.0)


@pytest.fixture(scope="module")
def reference(frames) -> bytes:
    """The PCM a receiver must produce: the same frames through a fresh decoder."""
    stream = opus.OpusStream()
    return b"".join(stream.feed(i, f).pcm for i, f in enumerate(frames))


@pytest.fixture
def group():
    sender = ExternalSender()
    return sender, make_group(CHANNEL, [ALICE, BOT, BOB], sender)


class Rig:
    """A receiver plus the sending side: transport cipher, sequence/counter per SSRC."""

    def __init__(self, mode=transport.XCHACHA, session=None, users=None, **kw):
        self.key = os.urandom(32)
        self.cipher = transport.Cipher(mode, self.key)
        self.session = session
        self.users = dict(users or {})
        self.out: dict[str, list[bytes]] = {}
        self.runs: list[str] = []
        self.seq: dict[int, int] = {}
        self.counter = 0
        self.rx = Receiver(
            mode,
            self.key,
            lambda: self.session,
            self.users.get,
            lambda uid, pcm: self.out.setdefault(uid, []).append(pcm),
            on_dave_failure_run=self.runs.append,
            **kw,
        )

    def packet(self, ssrc: int, payload: bytes, *, cipher=None, **kw) -> bytes:
        seq = self.seq.get(ssrc, 100)
        self.seq[ssrc] = seq + 1
        self.counter += 1
        return (cipher or self.cipher).encrypt(
            payload, sequence=seq, timestamp=seq * 960, ssrc=ssrc, counter=self.counter, **kw
        )

    def send(self, ssrc: int, payloads, **kw) -> None:
        for p in payloads:
            self.rx.handle(self.packet(ssrc, p, **kw))

    def pcm(self, user: int) -> bytes:
        return b"".join(self.out.get(str(user), []))

    def stats(self) -> dict:
        s = self.rx.stats()
        check_stats(s)
        assert s["internal_errors"] == 0
        return s


def similarity(a: bytes, b: bytes) -> float:
    """Correlation of two s16 PCM signals (over their common length)."""
    n = min(len(a), len(b)) // 2
    x = np.frombuffer(a[: 2 * n], dtype=np.int16).astype(np.float64)
    y = np.frombuffer(b[: 2 * n], dtype=np.int16).astype(np.float64)
    if not n or not x.std() or not y.std():
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


# ---- rtp ---------------------------------------------------------------------------------------


def test_rtp_parse_fields_csrc_and_extension():
    raw = rtp.build_header(0xBEEF, 0x01020304, 0xCAFEBABE, marker=True, padding=True, csrcs=(7, 8),
                           extension=(0xBEDE, 3))
    h = rtp.parse(raw)
    assert (h.sequence, h.timestamp, h.ssrc, h.payload_type) == (0xBEEF, 0x01020304, 0xCAFEBABE, 120)
    assert h.marker and h.padding and h.extension and h.csrc_count == 2
    assert (h.extension_profile, h.extension_words, h.size) == (0xBEDE, 3, 12 + 8 + 4)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x80", bytes(11), b"\x40" + bytes(11), b"\x82" + bytes(11) + bytes(4), b"\x90" + bytes(11) + b"\x00\x00"],
    ids=["empty", "1 byte", "v0", "v1", "csrc cut", "ext preamble cut"],
)
def test_rtp_parse_rejects_with_a_typed_error(raw):
    with pytest.raises(rtp.RtpError):
        rtp.parse(raw)


def test_rtcp_is_detected():
    assert rtp.is_rtcp(bytes([0x80, 200]) + bytes(6))  # sender report
    assert rtp.is_rtcp(bytes([0x81, 201]) + bytes(30))  # receiver report (M + PT 73)
    assert not rtp.is_rtcp(rtp.build_header(1, 2, 3))


def test_strip_payload_extension_then_padding():
    h = rtp.parse(rtp.build_header(1, 2, 3, padding=True, extension=(0xBEDE, 1)))
    assert rtp.strip_payload(h, b"EXT!" + b"opus" + b"\x00\x00\x03") == b"opus"
    for bad in (b"EX", b"EXT!", b"EXT!op\x00", b"EXT!op\x09"):
        with pytest.raises(rtp.RtpError):
            rtp.strip_payload(h, bad)


# ---- transport ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_transport_round_trip_with_extension_padding_csrc(mode):
    c = transport.Cipher(mode, os.urandom(32))
    pkt = c.encrypt(b"payload", sequence=5, timestamp=6, ssrc=7, counter=8, extension=b"\x10abc\x20def",
                    padding=5, csrcs=(1, 2, 3))
    h = rtp.parse(pkt)
    assert c.decrypt(pkt, h) == b"payload"
    assert pkt[-4:] == struct.pack(">I", 8)


@pytest.mark.parametrize("mode", MODES)
def test_transport_rejects_wrong_key_and_tampering(mode):
    c = transport.Cipher(mode, os.urandom(32))
    pkt = c.encrypt(b"payload", sequence=5, timestamp=6, ssrc=7, counter=8)
    other = transport.Cipher(mode, os.urandom(32))
    with pytest.raises(transport.TransportError):
        other.decrypt(pkt, rtp.parse(pkt))
    tampered = pkt[:2] + b"\x00\x06" + pkt[4:]  # sequence is in the AAD
    with pytest.raises(transport.TransportError):
        c.decrypt(tampered, rtp.parse(tampered))
    with pytest.raises(transport.TransportError):
        c.decrypt(pkt[:30], rtp.parse(pkt[:30]))


def test_transport_aes_gcm_nonce_is_counter_padded_to_12():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = os.urandom(32)
    header = rtp.build_header(1, 2, 3)
    pkt = header + AESGCM(key).encrypt(struct.pack(">I", 77) + bytes(8), b"frame", header) + struct.pack(">I", 77)
    assert transport.Cipher(transport.AES_GCM, key).decrypt(pkt, rtp.parse(pkt)) == b"frame"


def test_transport_decrypts_what_discord_py_sends():
    """discord.py 2.7's own xchacha20 sender (VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize)."""
    from discord.voice_client import VoiceClient

    key = os.urandom(32)
    fake = SimpleNamespace(secret_key=list(key), _incr_nonce=41)
    fake.checked_add = lambda attr, value, limit: setattr(fake, attr, getattr(fake, attr) + value)
    header = bytearray(rtp.build_header(9, 10, 11))
    pkt = VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize(fake, header, b"opus frame")
    assert transport.Cipher(transport.XCHACHA, list(key)).decrypt(pkt, rtp.parse(pkt)) == b"opus frame"


def test_cipher_rejects_bad_mode_and_key():
    with pytest.raises(ValueError):
        transport.Cipher("xsalsa20_poly1305", bytes(32))
    with pytest.raises(ValueError):
        transport.Cipher(transport.AES_GCM, bytes(16))


# ---- dave (classification) ---------------------------------------------------------------------


def test_dave_outcomes(group):
    _, s = group
    frame = bytes(range(1, 60))
    enc = s[ALICE].encrypt_opus(frame)
    assert enc[-2:] == dave.MARKER and len(enc) == len(frame) + 12 and dave.looks_encrypted(enc)
    assert dave.decrypt(s[BOT], ALICE, enc) == dave.Outcome("decrypted", frame)
    assert dave.decrypt(s[BOT], str(ALICE), dave.SILENCE).label == "silence"
    assert dave.decrypt(None, ALICE, frame).label == "off"
    assert dave.decrypt(s[BOT], ALICE, frame).label == "failed:unencrypted"
    assert dave.decrypt(s[BOT], BOB, s[ALICE].encrypt_opus(frame)).label == "failed:no_key"  # wrong user
    assert dave.decrypt(s[BOT], 444, enc).label == "failed:no_decryptor"  # not in the group
    assert dave.decrypt(s[BOT], "not-a-snowflake", enc).label == "failed:bad_user"
    assert dave.decrypt(s[BOT], ALICE, enc).label == "failed:no_key"  # replay of a decrypted frame
    s[BOT].set_passthrough_mode(True, 10)
    assert dave.decrypt(s[BOT], ALICE, frame) == dave.Outcome("passthrough", frame)


def test_dave_before_the_welcome():
    fresh = davey.DaveSession(1, BOT, CHANNEL)
    other = make_group(CHANNEL, [ALICE, BOB])
    enc = other[ALICE].encrypt_opus(b"x" * 40)
    assert dave.decrypt(fresh, ALICE, enc).label == "failed:not_ready"
    assert dave.decrypt(fresh, ALICE, b"x" * 40).label == "passthrough"  # peer not on DAVE yet
    assert dave.decrypt(fresh, ALICE, dave.SILENCE).label == "silence"


def test_dave_never_raises_on_a_broken_session():
    class Broken:
        ready = True

        def decrypt(self, *a):
            raise RuntimeError("Already mutably borrowed")

    assert dave.decrypt(Broken(), ALICE, b"\x01" * 30).label == "failed:error"


# ---- the full path -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("e2ee", [True, False], ids=["dave", "no-dave"])
def test_full_path_round_trip(mode, e2ee, frames, reference, group):
    _, s = group
    rig = Rig(mode, session=s[BOT] if e2ee else None)
    rig.rx.map_ssrc(SSRC_A, str(ALICE))
    payloads = [s[ALICE].encrypt_opus(f) for f in frames] if e2ee else frames
    rig.send(SSRC_A, payloads)
    st = rig.stats()
    assert rig.pcm(ALICE) == reference
    assert st["opus_decoded"] == len(frames) and st["opus_failed"] == 0 and st["plc_frames"] == 0
    assert st["dave_decrypted" if e2ee else "dave_off"] == len(frames)
    assert st["transport_mode"] == mode


def test_two_speakers_are_kept_apart(frames, reference, group):
    _, s = group
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE), SSRC_B: str(BOB)})
    for f in frames:  # interleaved, as they arrive on one socket
        rig.send(SSRC_A, [s[ALICE].encrypt_opus(f)])
        rig.send(SSRC_B, [s[BOB].encrypt_opus(f)])
    assert rig.pcm(ALICE) == reference and rig.pcm(BOB) == reference
    assert rig.stats()["dave_decrypted"] == 2 * len(frames)


@pytest.mark.parametrize("mode", MODES)
def test_padding_and_extension_under_dave(mode, frames, reference, group):
    _, s = group
    rig = Rig(mode, session=s[BOT], users={SSRC_A: str(ALICE)})
    for i, f in enumerate(frames):
        rig.send(SSRC_A, [s[ALICE].encrypt_opus(f)], extension=b"\x10\x00\x00\x00" * (1 + i % 3),
                 padding=1 + i % 16, csrcs=(5,) * (i % 2))
    st = rig.stats()
    assert rig.pcm(ALICE) == reference
    assert st["dave_decrypted"] == len(frames) and st["bad_payload"] == 0


def test_a_missed_padding_strip_would_hide_the_dave_marker(frames, group):
    """What other libraries got wrong: without the strip the frame ends in pad bytes."""
    _, s = group
    c = transport.Cipher(transport.XCHACHA, os.urandom(32))
    pkt = c.encrypt(s[ALICE].encrypt_opus(frames[5]), sequence=1, timestamp=1, ssrc=1, counter=1, padding=4)
    h = rtp.parse(pkt)
    raw = c.decrypt(pkt, dataclasses.replace(h, padding=False))
    assert raw[-2:] != dave.MARKER and not dave.looks_encrypted(raw)
    assert dave.decrypt(s[BOT], ALICE, raw).label == "failed:unencrypted"
    assert dave.decrypt(s[BOT], ALICE, c.decrypt(pkt, h)).label == "decrypted"


def test_silence_frames_pass_under_dave(frames, group):
    _, s = group
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE)})
    rig.send(SSRC_A, [s[ALICE].encrypt_opus(f) for f in frames[:10]] + [dave.SILENCE] * 5)
    st = rig.stats()
    assert st["dave_decrypted"] == 10 and st["dave_silence"] == 5 and st["opus_decoded"] == 15
    assert len(rig.pcm(ALICE)) == 15 * 960 * 4


def test_passthrough_frames_around_a_transition(frames, reference, group):
    _, s = group
    s[BOT].set_passthrough_mode(True, 10)  # what discord.py does around a downgrade
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE)})
    half = len(frames) // 2
    rig.send(SSRC_A, frames[:half] + [s[ALICE].encrypt_opus(f) for f in frames[half:]])
    st = rig.stats()
    assert st["dave_passthrough"] == half and st["dave_decrypted"] == len(frames) - half
    assert rig.pcm(ALICE) == reference


def test_unencrypted_frames_without_passthrough_are_dropped_then_op31(frames, group):
    _, s = group
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE)})
    rig.send(SSRC_A, frames[:40])
    st = rig.stats()
    assert st["dave_failed"]["unencrypted"] == 40 and st["opus_decoded"] == 0 and not rig.out
    assert rig.runs == [str(ALICE)] and st["dave_failure_runs"] == 1  # after 36 in a row
    rig.send(SSRC_A, [s[ALICE].encrypt_opus(f) for f in frames[40:45]])
    st = rig.stats()
    assert st["dave_decrypted"] == 5 and st["plc_frames"] == 0  # first frames of the stream


def test_no_cryptor_yet_then_welcome(frames):
    """The first ~100 ms after join: the bot's session has no group; frames fail, then decrypt."""
    sender = ExternalSender()
    peers = make_group(CHANNEL, [ALICE, BOB], sender)
    bot = davey.DaveSession(1, BOT, CHANNEL)
    rig = Rig(session=bot, users={SSRC_A: str(ALICE)})
    rig.send(SSRC_A, [peers[ALICE].encrypt_opus(f) for f in frames[:5]])
    assert rig.stats()["dave_failed"]["not_ready"] == 5 and not rig.runs
    # the server adds the bot: Alice (member) commits the add, the bot processes the welcome
    kp = bot.get_serialized_key_package()
    bot.set_external_sender(sender.package())
    props = sender.add_proposals(CHANNEL, peers[ALICE].epoch, [kp])
    cw = peers[ALICE].process_proposals(davey.ProposalsOperationType.append, props)
    peers[BOB].process_proposals(davey.ProposalsOperationType.append, props)
    for p in peers.values():
        p.process_commit(cw.commit)
    bot.process_welcome(cw.welcome)
    rig.send(SSRC_A, [peers[ALICE].encrypt_opus(f) for f in frames[5:20]])
    st = rig.stats()
    assert st["dave_decrypted"] == 15 and st["opus_decoded"] == 15
    assert st["plc_frames"] == 0  # the stream starts at the first decodable frame


def test_key_rotation_when_someone_leaves(frames, reference, group):
    sender, s = group
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE)})
    half = len(frames) // 2
    late_old_epoch = [s[ALICE].encrypt_opus(f) for f in frames[:half]]
    epoch = s[BOT].epoch
    remove_member(s, sender, BOB)
    assert s[BOT].epoch == epoch + 1
    rig.send(SSRC_A, late_old_epoch + [s[ALICE].encrypt_opus(f) for f in frames[half:]])
    st = rig.stats()
    assert st["dave_decrypted"] == len(frames)  # old-epoch keys are kept for the transition
    assert rig.pcm(ALICE) == reference


def test_frames_for_another_user_or_group_fail_and_are_counted(frames, group):
    _, s = group
    stranger = make_group(CHANNEL, [ALICE, BOT])  # same ids, other group: another epoch secret
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE), SSRC_B: str(BOB)})
    rig.send(SSRC_A, [stranger[ALICE].encrypt_opus(f) for f in frames[:10]])
    rig.send(SSRC_B, [s[ALICE].encrypt_opus(f) for f in frames[:10]])  # Alice's frames on Bob's SSRC
    st = rig.stats()
    assert st["dave_failed"]["no_key"] == 20 and st["opus_decoded"] == 0 and not rig.out


def test_wrong_transport_key_is_counted(frames):
    rig = Rig(transport.AES_GCM, users={SSRC_A: str(ALICE)})
    wrong = transport.Cipher(transport.AES_GCM, os.urandom(32))
    rig.send(SSRC_A, frames[:10], cipher=wrong)
    st = rig.stats()
    assert st["transport_failed"] == 10 and st["opus_decoded"] == 0 and not rig.out


def test_unknown_ssrc_is_held_then_replayed(frames, reference, group):
    _, s = group
    rig = Rig(session=s[BOT])
    payloads = [s[ALICE].encrypt_opus(f) for f in frames]
    rig.send(SSRC_A, payloads[:20])
    st = rig.stats()
    assert st["unknown_ssrc_held"] == 20 and st["held_now"] == 20 and not rig.out
    rig.rx.map_ssrc(SSRC_A, str(ALICE))  # op 5 SPEAKING arrives
    rig.send(SSRC_A, payloads[20:])
    st = rig.stats()
    assert st["unknown_ssrc_replayed"] == 20 and st["held_now"] == 0
    assert rig.pcm(ALICE) == reference


def test_unknown_ssrc_found_through_the_callback(frames, reference):
    rig = Rig()
    rig.send(SSRC_A, frames[:10])
    rig.users[SSRC_A] = str(ALICE)  # the adapter's own map learns it; no map_ssrc call
    rig.send(SSRC_A, frames[10:])
    assert rig.pcm(ALICE) == reference and rig.stats()["unknown_ssrc_replayed"] == 10


def test_held_packets_expire_and_are_bounded(frames):
    now = [0.0]
    rig = Rig(clock=lambda: now[0], hold_packets=8)
    rig.send(SSRC_A, frames[:12])
    assert rig.stats()["unknown_ssrc_dropped"] == 4  # only the last 8 are kept
    now[0] = 5.0
    rig.send(SSRC_B, frames[12:13])
    st = rig.stats()
    assert st["unknown_ssrc_dropped"] == 12 and st["held_now"] == 1


def test_video_rtcp_and_other_payload_types_are_ignored(frames):
    rig = Rig(users={SSRC_A: str(ALICE), SSRC_B: str(BOB)})
    rig.rx.ignore_ssrc(SSRC_B)
    rig.send(SSRC_B, frames[:3])
    rig.send(SSRC_A, [b"\x90" * 50], payload_type=103)  # a video payload type
    rig.rx.handle(bytes([0x80, 201, 0, 1]) + os.urandom(4))  # RTCP receiver report
    rig.rx.handle(b"\x00\x02\x00\x46" + bytes(70))  # an IP discovery answer: not RTP
    st = rig.stats()
    assert (st["non_opus"], st["rtcp"], st["bad_rtp"], st["opus_decoded"]) == (4, 1, 1, 0)


def test_losses_are_concealed_and_late_packets_dropped(frames, reference):
    rig = Rig(users={SSRC_A: str(ALICE)})
    pkts = [rig.packet(SSRC_A, f) for f in frames]
    kept = [p for i, p in enumerate(pkts) if i % 10 != 3]
    for p in kept:
        rig.rx.handle(p)
    rig.rx.handle(pkts[50])  # a duplicate, late
    st = rig.stats()
    lost = len(pkts) - len(kept)
    assert st["plc_frames"] == lost and st["opus_late"] == 1
    assert len(rig.pcm(ALICE)) == len(reference)  # the timeline is kept
    assert similarity(rig.pcm(ALICE), reference) > 0.5


def test_dave_failures_are_concealed_never_decoded(frames, group):
    _, s = group
    rig = Rig(session=s[BOT], users={SSRC_A: str(ALICE)})
    payloads = [s[ALICE].encrypt_opus(f) for f in frames]
    for i in range(3, len(payloads), 10):
        payloads[i] = payloads[i][:-3] + b"\x00" + payloads[i][-2:]  # corrupt the supplemental size
    rig.send(SSRC_A, payloads)
    st = rig.stats()
    failed = st["dave_failed_total"]
    assert failed == len(range(3, len(payloads), 10)) and st["opus_failed"] == 0
    assert st["plc_frames"] == failed


def test_proof_that_dave_is_really_on(frames, reference, group):
    """The same packets with the DAVE step left out: Opus fails or decodes garbage."""
    _, s = group
    payloads = [s[ALICE].encrypt_opus(f) for f in frames]
    off = Rig(session=None, users={SSRC_A: str(ALICE)})
    off.send(SSRC_A, payloads)
    st = off.stats()
    assert st["opus_failed"] >= 0.2 * len(frames), st
    assert abs(similarity(off.pcm(ALICE), reference)) < 0.2
    on = Rig(session=s[BOT], users={SSRC_A: str(ALICE)})
    on.send(SSRC_A, [s[ALICE].encrypt_opus(f) for f in frames])
    assert on.pcm(ALICE) == reference


def test_sink_errors_do_not_stop_the_receiver(frames):
    calls = []

    def sink(uid, pcm):
        calls.append(uid)
        raise RuntimeError("pipeline full")

    key = os.urandom(32)
    rx = Receiver(transport.XCHACHA, key, lambda: None, {SSRC_A: "1"}.get, sink)
    c = transport.Cipher(transport.XCHACHA, key)
    for i, f in enumerate(frames[:5]):
        rx.handle(c.encrypt(f, sequence=i, timestamp=0, ssrc=SSRC_A, counter=i))
    st = rx.stats()
    check_stats(st)
    assert st["sink_errors"] == 5 and st["opus_decoded"] == 5 and len(calls) == 5


def test_set_key_after_a_reconnect(frames):
    rig = Rig(users={SSRC_A: str(ALICE)})
    new = transport.Cipher(transport.AES_GCM, os.urandom(32))
    rig.send(SSRC_A, frames[:3], cipher=new)
    rig.rx.set_key(transport.AES_GCM, new._key)
    rig.send(SSRC_A, frames[3:6], cipher=new)
    st = rig.stats()
    assert st["transport_failed"] == 3 and st["opus_decoded"] == 3


@pytest.mark.parametrize("prefer", ["libopus", "pyav"])
def test_both_opus_backends_decode_and_conceal(prefer, frames):
    stream = opus.OpusStream(prefer)
    out = [stream.feed(i, f) for i, f in enumerate(frames) if i != 7]
    assert all(o.status == "decoded" for o in out)
    assert sum(o.concealed for o in out) == 1
    assert sum(len(o.pcm) for o in out) == len(frames) * 960 * 4
    assert stream.feed(500, b"\xff\xff\xff").status == "failed"
    assert stream.feed(501, b"").status == "failed"


def test_opus_backend_is_pip_only():
    info = opus.backend()
    assert info["backend"] == "libopus" and "av" in info["library"], info
