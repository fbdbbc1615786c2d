"""Build a real DAVE (MLS) group in-process, for tests.

davey is a complete DAVE *client*; the voice server's part, the MLS "external sender", is not
in it. This module plays that part with `cryptography` and a small encoder for the RFC 9420
structures it needs (TLS presentation language, QUIC-style variable-length vectors):

    ExternalSender      = SignaturePublicKey (P-256, uncompressed point) + basic Credential
    external proposal   = MLSMessage(PublicMessage(FramedContent(sender = external #0,
                          content = Proposal)), signature = ECDSA-P256-SHA256 over
                          SignContent("MLS 1.0 FramedContentTBS", FramedContentTBS))

As in DAVE, the group id is the channel id and each credential the user id, both as 8-byte
big-endian integers; protocol version 1 (ciphersuite MLS_128_DHKEMP256_AES128GCM_SHA256_P256).

Public API (kept small; the fake Discord server imports it too):

    ExternalSender()                       the server's MLS identity (a fresh P-256 key)
      .package() -> bytes                  payload of voice op 25 (dave_mls_external_sender_package)
      .add_proposals(channel_id, epoch, key_packages) -> bytes
      .remove_proposals(channel_id, epoch, leaf_indexes) -> bytes
                                           payload of op 27 *after* its 1-byte operation type
                                           (0 = append): the vector of MLSMessages, exactly what
                                           `DaveSession.process_proposals` takes
    vec(data) -> bytes                     an MLS variable-length vector (varint length + data)
    make_group(channel_id, user_ids, external_sender=None) -> dict[int, davey.DaveSession]
                                           every user in one group, all sessions ready
    remove_member(sessions, external_sender, user_id) -> None
                                           external Remove + commit: a new epoch (key rotation)
    opus_frames(wav_path, seconds=None) -> list[bytes]
                                           speech as 20 ms 48 kHz stereo Opus packets (PyAV)

How `make_group` builds the group (the path a voice server takes): every session gets the
external sender (each then holds a "pending" one-member group at epoch 0); the server proposes
adding everyone else's key package to the first user's group; that user's `process_proposals`
returns commit + welcome; the committer processes its own commit (op 29), the others the
welcome (op 30).
"""

from __future__ import annotations

import struct

import davey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PROTOCOL_VERSION = 1  # DAVE protocol version (MLS ciphersuite 2)

_MLS10 = 1
_WIRE_PUBLIC_MESSAGE = 1
_SENDER_EXTERNAL = 2
_CONTENT_PROPOSAL = 2
_PROPOSAL_ADD = 1
_PROPOSAL_REMOVE = 3
_CREDENTIAL_BASIC = 1


def varint(n: int) -> bytes:
    """RFC 9420 §2.1.2 variable-size length (minimal encoding)."""
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return struct.pack(">H", 0x4000 | n)
    if n < 0x40000000:
        return struct.pack(">I", 0x80000000 | n)
    raise ValueError("vector too long for MLS")


def vec(data: bytes) -> bytes:
    """opaque data<V>: a variable-length vector."""
    return varint(len(data)) + data


def _u16(n: int) -> bytes:
    return struct.pack(">H", n)


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


class ExternalSender:
    """The voice server's MLS external sender: a P-256 key and a basic credential."""

    def __init__(self, identity: bytes = b"dvm-fake-voice-server") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._identity = identity

    def package(self) -> bytes:
        """ExternalSender { SignaturePublicKey signature_key; Credential credential; }."""
        credential = _u16(_CREDENTIAL_BASIC) + vec(self._identity)
        return vec(self._public) + credential

    def add_proposals(self, channel_id: int, epoch: int, key_packages: list[bytes]) -> bytes:
        """External Add proposals, one per (bare, serialized) KeyPackage."""
        messages = [self._proposal(channel_id, epoch, _u16(_PROPOSAL_ADD) + kp) for kp in key_packages]
        return vec(b"".join(messages))

    def remove_proposals(self, channel_id: int, epoch: int, leaf_indexes: list[int]) -> bytes:
        """External Remove proposals, one per leaf index."""
        messages = [
            self._proposal(channel_id, epoch, _u16(_PROPOSAL_REMOVE) + _u32(leaf)) for leaf in leaf_indexes
        ]
        return vec(b"".join(messages))

    def _proposal(self, channel_id: int, epoch: int, proposal: bytes) -> bytes:
        content = (
            vec(_u64(channel_id))  # group_id
            + _u64(epoch)
            + bytes([_SENDER_EXTERNAL])
            + _u32(0)  # sender_index: the one external sender of the group
            + vec(b"")  # authenticated_data
            + bytes([_CONTENT_PROPOSAL])
            + proposal
        )
        # FramedContentTBS for an external sender carries no GroupContext.
        tbs = _u16(_MLS10) + _u16(_WIRE_PUBLIC_MESSAGE) + content
        sign_content = vec(b"MLS 1.0 FramedContentTBS") + vec(tbs)
        signature = self._key.sign(sign_content, ec.ECDSA(hashes.SHA256()))  # DER, as MLS wants
        public_message = content + vec(signature)  # no confirmation tag / membership tag
        return _u16(_MLS10) + _u16(_WIRE_PUBLIC_MESSAGE) + public_message


def make_group(
    channel_id: int, user_ids: list[int], external_sender: ExternalSender | None = None
) -> dict[int, davey.DaveSession]:
    """A ready DAVE group of `user_ids` (at least two) in `channel_id`; the first user commits."""
    if len(user_ids) < 2:
        raise ValueError("a DAVE group in these helpers needs at least two users")
    sender = external_sender or ExternalSender()
    sessions = {uid: davey.DaveSession(PROTOCOL_VERSION, uid, channel_id) for uid in user_ids}
    key_packages = {}
    for uid, session in sessions.items():
        key_packages[uid] = session.get_serialized_key_package()
        session.set_external_sender(sender.package())
    committer, *others = user_ids
    proposals = sender.add_proposals(channel_id, 0, [key_packages[uid] for uid in others])
    result = sessions[committer].process_proposals(davey.ProposalsOperationType.append, proposals)
    if result is None or result.welcome is None:
        raise RuntimeError("davey returned no commit/welcome for the add proposals")
    sessions[committer].process_commit(result.commit)
    for uid in others:
        sessions[uid].process_welcome(result.welcome)
    return sessions


def remove_member(sessions: dict[int, davey.DaveSession], external_sender: ExternalSender, user_id: int) -> None:
    """Remove `user_id` from the group (it leaves `sessions`); the others move to a new epoch."""
    leaving = sessions.pop(user_id)
    leaf = leaving.own_leaf_index
    committer_id = next(iter(sessions))
    committer = sessions[committer_id]
    channel_id = committer.channel_id
    proposals = external_sender.remove_proposals(channel_id, committer.epoch, [leaf])
    # The server sends the proposals to everyone; every member stores them, one commits.
    result = None
    for uid, session in sessions.items():
        out = session.process_proposals(davey.ProposalsOperationType.append, proposals)
        if uid == committer_id:
            result = out
    if result is None:
        raise RuntimeError("davey returned no commit for the remove proposal")
    for session in sessions.values():
        session.process_commit(result.commit)


def opus_frames(wav_path: str, seconds: float | None = None, bitrate: int = 64_000) -> list[bytes]:
    """A speech file as Discord-style Opus packets: 20 ms, 48 kHz stereo (PyAV's libopus).

    The encoder's first packets carry its look-ahead; they decode like any other packet.
    """
    import av

    frames: list[bytes] = []
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48_000
    enc.layout = "stereo"
    enc.format = "s16"
    enc.bit_rate = bitrate
    enc.options = {"application": "voip", "frame_duration": "20"}
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48_000, frame_size=960)
    limit = None if seconds is None else int(seconds * 48_000)
    done = 0
    with av.open(wav_path) as container:
        decoded = list(container.decode(audio=0)) + [None]
    for frame in decoded:
        for chunk in resampler.resample(frame):
            if limit is not None and done >= limit:
                break
            chunk.pts = done
            done += chunk.samples
            frames += [bytes(p) for p in enc.encode(chunk)]
    frames += [bytes(p) for p in enc.encode(None)]
    return frames
