"""RTP packets as Discord voice sends them (RFC 3550), parsed with strict bounds checks.

Layout of a Discord voice packet in the "rtpsize" transport modes:

    0       1       2       3
    V=2|P|X|CC  M|PT  sequence        12-byte fixed header
    timestamp
    SSRC
    CSRC x CC                         4 bytes each
    ext profile  ext length (words)   4-byte extension preamble, only when X is set
    -- encrypted from here --
    extension body (length x 4 bytes) then the payload, then RTP padding when P is set
    -- then the AEAD tag (16 bytes) and the 4-byte nonce counter --

The fixed header, the CSRCs and the extension preamble travel in the clear and are the AEAD's
additional data; the extension body and padding are inside the ciphertext, so they are stripped
after transport decryption (`strip_payload`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
FIXED_HEADER = 12
EXTENSION_PREAMBLE = 4
OPUS_PAYLOAD_TYPE = 120  # what Discord (and discord.py) put in the PT field for Opus
_RTCP_TYPES = range(200, 205)  # SR, RR, SDES, BYE, APP: the whole second byte (marker bit + PT 72-76)


class RtpError(ValueError):
    """A packet that is not a well-formed RTP packet (or whose payload framing is wrong)."""


@dataclass(frozen=True, slots=True)
class RtpHeader:
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    extension_profile: int  # 0 when there is no extension
    extension_words: int  # length of the (encrypted) extension body in 32-bit words

    @property
    def size(self) -> int:
        """Bytes of clear header: fixed part, CSRCs and, with X set, the extension preamble."""
        return FIXED_HEADER + 4 * self.csrc_count + (EXTENSION_PREAMBLE if self.extension else 0)


def is_rtcp(packet: bytes) -> bool:
    """RTCP shares the socket; its second byte is the packet type 200-204."""
    return len(packet) >= 2 and packet[1] in _RTCP_TYPES and packet[0] >> 6 == RTP_VERSION


def parse(packet: bytes) -> RtpHeader:
    """The clear header of an RTP packet; raises RtpError, never IndexError."""
    if len(packet) < FIXED_HEADER:
        raise RtpError(f"packet of {len(packet)} bytes is shorter than an RTP header")
    b0, b1, sequence, timestamp, ssrc = struct.unpack_from(">BBHII", packet, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    csrc_count = b0 & 0x0F
    extension = bool(b0 & 0x10)
    end = FIXED_HEADER + 4 * csrc_count
    profile = words = 0
    if extension:
        if len(packet) < end + EXTENSION_PREAMBLE:
            raise RtpError("packet too short for its RTP extension preamble")
        profile, words = struct.unpack_from(">HH", packet, end)
        end += EXTENSION_PREAMBLE
    elif len(packet) < end:
        raise RtpError("packet too short for its CSRC list")
    return RtpHeader(
        padding=bool(b0 & 0x20),
        extension=extension,
        csrc_count=csrc_count,
        marker=bool(b1 & 0x80),
        payload_type=b1 & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        extension_profile=profile,
        extension_words=words,
    )


def strip_payload(header: RtpHeader, plaintext: bytes) -> bytes:
    """The media payload of a decrypted packet body: extension body dropped, then RTP padding.

    The padding strip matters under DAVE: a padded frame otherwise ends in pad bytes and
    hides DAVE's trailing 0xFAFA marker.
    """
    start = 4 * header.extension_words if header.extension else 0
    end = len(plaintext)
    if start > end:
        raise RtpError(f"extension of {start} bytes is longer than the {end}-byte body")
    if header.padding:
        if end == start:
            raise RtpError("padding bit set on an empty payload")
        count = plaintext[end - 1]
        if count == 0 or count > end - start:
            raise RtpError(f"bad RTP padding count {count} for a {end - start}-byte payload")
        end -= count
    return bytes(plaintext[start:end])


def build_header(
    sequence: int,
    timestamp: int,
    ssrc: int,
    *,
    payload_type: int = OPUS_PAYLOAD_TYPE,
    marker: bool = False,
    padding: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, int] | None = None,
) -> bytes:
    """The clear header (with the extension preamble `(profile, words)` when given)."""
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    b0 = (RTP_VERSION << 6) | (0x20 if padding else 0) | (0x10 if extension else 0) | len(csrcs)
    b1 = (0x80 if marker else 0) | (payload_type & 0x7F)
    out = struct.pack(">BBHII", b0, b1, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    out += b"".join(struct.pack(">I", c) for c in csrcs)
    if extension:
        out += struct.pack(">HH", *extension)
    return out
