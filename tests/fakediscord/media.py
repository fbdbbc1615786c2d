"""What a Discord client puts on the wire when it speaks: Opus frames in RTP, transport-encrypted.

Written from the protocol description, independently of dvm's receiver (so the two check each
other): 48 kHz stereo 20 ms Opus frames (PyAV's libopus), an RTP header with a one-byte-header
extension (as Discord clients send) and, now and then, RTP padding; then one of the "rtpsize"
AEAD modes: the RTP header and the 4-byte extension preamble are the additional data, the
extension body and the payload are encrypted, and the 32-bit nonce counter follows the tag.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import av
import nacl.bindings
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SILENCE_FRAME = b"\xf8\xff\xfe"
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
PAYLOAD_TYPE = 120
MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")


@functools.lru_cache(maxsize=16)
def opus_frames(path: str, bitrate: int = 64000) -> tuple[bytes, ...]:
    """A WAV file as 20 ms Opus frames (48 kHz stereo), as a Discord client would send them."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "stereo"
    encoder.format = av.AudioFormat("s16")
    encoder.bit_rate = bitrate
    encoder.options = {"frame_duration": "20", "application": "voip"}
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000, frame_size=FRAME_SAMPLES)
    frames: list[bytes] = []
    with av.open(str(Path(path))) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            for chunk in resampler.resample(frame):
                frames.extend(bytes(p) for p in encoder.encode(chunk))
        for chunk in resampler.resample(None):
            frames.extend(bytes(p) for p in encoder.encode(chunk))
    frames.extend(bytes(p) for p in encoder.encode(None))
    return tuple(frames)


class RtpStream:
    """One sender's RTP stream (sequence, timestamp, nonce counter) for one transport mode and key."""

    def __init__(self, ssrc: int, mode: str, key: bytes, *, padding_every: int = 7, extension: bool = True):
        if mode not in MODES:
            raise ValueError(f"unsupported transport mode {mode}")
        self.ssrc, self.mode, self.key = ssrc, mode, bytes(key)
        self.sequence = 0x1234
        self.timestamp = 0x10000
        self.counter = 0
        self.padding_every = padding_every
        self.extension = extension
        self.sent = 0

    def packet(self, payload: bytes) -> bytes:
        self.sent += 1
        pad = 4 if self.padding_every and self.sent % self.padding_every == 0 else 0
        first = 0x80 | (0x10 if self.extension else 0) | (0x20 if pad else 0)
        header = struct.pack(">BBHII", first, PAYLOAD_TYPE, self.sequence, self.timestamp, self.ssrc)
        body = payload
        if self.extension:
            header += b"\xbe\xde\x00\x01"  # one-byte-header extension, one 32-bit word
            body = b"\x10\x7f\x00\x00" + body  # id 1 (audio level), length 1, then padding
        if pad:
            body += bytes(pad - 1) + bytes([pad])
        nonce = struct.pack(">I", self.counter)
        self.counter = (self.counter + 1) & 0xFFFFFFFF
        if self.mode == "aead_aes256_gcm_rtpsize":
            sealed = AESGCM(self.key).encrypt(nonce + bytes(8), body, header)
        else:
            sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, header, nonce + bytes(20), self.key)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        return header + sealed + nonce

    def skip(self, frames: int) -> None:
        """Time passes without packets (a speaker's silence): the timestamp moves on."""
        self.timestamp = (self.timestamp + frames * FRAME_SAMPLES) & 0xFFFFFFFF


def ip_discovery_answer(request: bytes, address: str, port: int) -> bytes | None:
    """The 74-byte answer to a 74-byte IP discovery request (type 1), or None if it is not one."""
    if len(request) != 74 or request[:2] != b"\x00\x01":
        return None
    ssrc = struct.unpack_from(">I", request, 4)[0]
    return struct.pack(">HHI", 2, 70, ssrc) + address.encode().ljust(64, b"\x00") + struct.pack(">H", port)
