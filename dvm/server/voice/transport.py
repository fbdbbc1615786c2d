"""Discord voice transport encryption, the two "rtpsize" AEAD modes.

    packet = clear header (RTP header + CSRCs + extension preamble)   -> the AEAD's AAD
           + AEAD(extension body + payload + RTP padding) + 16-byte tag
           + 4-byte big-endian nonce counter

The nonce is the counter zero-padded on the right: to 12 bytes for AES-256-GCM, to 24 for
XChaCha20-Poly1305. `Cipher.decrypt` returns the media payload (extension body and padding
already stripped); `Cipher.encrypt` builds a packet the same way (tests, the fake server).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from dvm.server.voice import rtp

AES_GCM = "aead_aes256_gcm_rtpsize"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"
MODES = (AES_GCM, XCHACHA)
TAG = 16
NONCE_COUNTER = 4
KEY_SIZE = 32


class TransportError(ValueError):
    """A packet that does not decrypt (wrong key, tampered, truncated) or is badly framed."""


class Cipher:
    """One connection's transport cipher: a mode and the 32-byte secret key from op 4."""

    def __init__(self, mode: str, secret_key: bytes | list[int]) -> None:
        key = bytes(secret_key)
        if mode not in MODES:
            raise ValueError(f"unsupported voice encryption mode {mode!r} (supported: {', '.join(MODES)})")
        if len(key) != KEY_SIZE:
            raise ValueError(f"voice secret key must be {KEY_SIZE} bytes, got {len(key)}")
        self.mode = mode
        self._key = key
        self._aes = AESGCM(key) if mode == AES_GCM else None

    def _nonce(self, counter: bytes) -> bytes:
        return counter + bytes((12 if self._aes else 24) - NONCE_COUNTER)

    def decrypt(self, packet: bytes, header: rtp.RtpHeader) -> bytes:
        """The payload of a parsed packet; raises TransportError or rtp.RtpError."""
        body_start = header.size
        if len(packet) < body_start + TAG + NONCE_COUNTER:
            raise TransportError(f"packet of {len(packet)} bytes too short for its header, tag and nonce")
        aad = bytes(packet[:body_start])
        ciphertext = bytes(packet[body_start:-NONCE_COUNTER])
        nonce = self._nonce(bytes(packet[-NONCE_COUNTER:]))
        try:
            if self._aes is not None:
                plaintext = self._aes.decrypt(nonce, ciphertext, aad)
            else:
                plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, self._key)
        except (InvalidTag, CryptoError) as e:
            raise TransportError("transport decryption failed (wrong key or tampered packet)") from e
        return rtp.strip_payload(header, plaintext)

    def encrypt(
        self,
        payload: bytes,
        *,
        sequence: int,
        timestamp: int,
        ssrc: int,
        counter: int,
        payload_type: int = rtp.OPUS_PAYLOAD_TYPE,
        marker: bool = False,
        csrcs: tuple[int, ...] = (),
        extension: bytes | None = None,
        extension_profile: int = 0xBEDE,
        padding: int = 0,
    ) -> bytes:
        """A whole packet; `extension` is the extension body (a multiple of 4 bytes), `padding`
        the RTP pad count (0 = none; the last pad byte holds the count)."""
        if extension is not None and len(extension) % 4:
            raise ValueError("an RTP extension body is a whole number of 32-bit words")
        if not 0 <= padding <= 255:
            raise ValueError("RTP padding is 0-255 bytes")
        header = rtp.build_header(
            sequence,
            timestamp,
            ssrc,
            payload_type=payload_type,
            marker=marker,
            padding=padding > 0,
            csrcs=csrcs,
            extension=(extension_profile, len(extension) // 4) if extension is not None else None,
        )
        plaintext = (extension or b"") + payload + (bytes(padding - 1) + bytes([padding]) if padding else b"")
        return self.seal(header, plaintext, counter)

    def seal(self, header: bytes, plaintext: bytes, counter: int) -> bytes:
        """header + AEAD(plaintext, aad=header) + counter: no checks (the fuzz tests use it)."""
        counter_bytes = struct.pack(">I", counter & 0xFFFFFFFF)
        nonce = self._nonce(counter_bytes)
        if self._aes is not None:
            sealed = self._aes.encrypt(nonce, plaintext, header)
        else:
            sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, self._key)
        return header + sealed + counter_bytes
