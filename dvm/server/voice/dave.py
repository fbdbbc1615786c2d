"""DAVE (end-to-end) decryption of one received Opus frame, classified, never raising.

The session is a `davey.DaveSession` owned by the voice connection (discord.py keeps it in
`VoiceConnectionState.dave_session`); this module only calls `decrypt` on it. Outcomes:

    decrypted     an E2EE frame, decrypted with the sender's current (or recent) key
    passthrough   an unencrypted frame the session accepted (passthrough mode around
                  protocol transitions), or, before our group exists, a frame that carries no
                  DAVE marker (what peers send until the transition to DAVE executes)
    silence       the 3-byte Opus silence frame f8 ff fe, never encrypted
    off           no DAVE on this connection (protocol version 0): the frame is plain Opus
    failed:<why>  to be dropped, never fed to Opus:
                  not_ready       an E2EE frame before our welcome/commit (first ~100 ms)
                  no_decryptor    the sender is not (yet) in our group
                  unencrypted     a plain frame while passthrough is off
                  no_key          no key of ours opens it: another epoch/group/user,
                                  tampered, or a replay of a frame already decrypted
                  bad_user        the user id is not a Discord snowflake
                  error           anything else davey reported
"""

from __future__ import annotations

from dataclasses import dataclass

SILENCE = b"\xf8\xff\xfe"
MARKER = b"\xfa\xfa"  # DAVE's magic marker, the last two bytes of an E2EE frame
_MIN_E2EE = 1 + 8 + 1 + 2  # >= 1 byte of media, 8-byte truncated tag, supplemental size, marker

try:  # davey's MediaType; imported lazily so that this module loads without davey
    import davey as _davey

    _AUDIO = _davey.MediaType.audio
except ImportError:  # pragma: no cover - davey comes with discord.py[voice]
    _davey = None
    _AUDIO = 0

DECRYPTED = "decrypted"
PASSTHROUGH = "passthrough"
SILENT = "silence"
OFF = "off"
REASONS = ("not_ready", "no_decryptor", "unencrypted", "no_key", "bad_user", "error")


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # decrypted | passthrough | silence | off | failed
    frame: bytes | None  # the Opus frame to decode; None when failed
    reason: str = ""  # one of REASONS when failed

    @property
    def ok(self) -> bool:
        return self.frame is not None

    @property
    def label(self) -> str:
        return f"failed:{self.reason}" if self.reason else self.kind


def looks_encrypted(frame: bytes) -> bool:
    """Whether a frame carries DAVE's framing: the marker and a plausible supplemental size."""
    if len(frame) < _MIN_E2EE or frame[-2:] != MARKER:
        return False
    supplemental = frame[-3]
    return 11 <= supplemental <= len(frame) - 1


def _failed(reason: str) -> Outcome:
    return Outcome("failed", None, reason)


def _reason(error: BaseException) -> str:
    text = str(error)
    if "NoDecryptorForUser" in text:
        return "no_decryptor"
    if "UnencryptedWhenPassthroughDisabled" in text:
        return "unencrypted"
    if "NoValidCryptorFound" in text:
        return "no_key"
    return "error"


def decrypt(session: object | None, user_id: str | int, frame: bytes) -> Outcome:
    """Classify and, when it is E2EE, decrypt one Opus frame from `user_id`."""
    if frame == SILENCE:
        return Outcome(SILENT, frame)
    if session is None:
        return Outcome(OFF, frame)
    try:
        uid = int(user_id)
        if not 0 < uid < 1 << 64:
            raise ValueError
    except (TypeError, ValueError):
        return _failed("bad_user")
    try:
        ready = bool(session.ready)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any failure of the Rust session reads as "not ready"
        ready = False
    if not ready:
        # No group yet: peers that are not on DAVE yet send plain frames (passthrough, as
        # discord.js does); an E2EE frame cannot be opened until our welcome/commit.
        return _failed("not_ready") if looks_encrypted(frame) else Outcome(PASSTHROUGH, frame)
    try:
        out = session.decrypt(uid, _AUDIO, frame)  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - counted by reason; the frame is dropped
        return _failed(_reason(e))
    except BaseException as e:  # pyo3 turns a Rust panic into PanicException(BaseException)
        if type(e).__name__ != "PanicException":
            raise
        return _failed("error")
    out = bytes(out)
    if out == frame:
        return Outcome(PASSTHROUGH, out)
    if not out:
        return _failed("error")
    return Outcome(DECRYPTED, out)
