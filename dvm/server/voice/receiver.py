"""The voice receive path: UDP packet in, one speaker's PCM out.

    UDP packet -> RTP header -> transport decrypt -> strip extension + padding
               -> DAVE decrypt (user from the SSRC map) -> Opus decode per SSRC -> sink(user_id, pcm)

`Receiver.handle` never raises; every packet ends in exactly one counted outcome:

    packets == rtcp + bad_rtp + non_opus + transport_failed + bad_payload
               + unknown_ssrc_dropped + held_now + sum(dave_failed) + opus_decoded + opus_failed + opus_late
               + internal_errors (0 unless we have a bug)

(`check_stats` asserts it.) Packets from an SSRC with no user yet are held (after transport
decryption, so forged packets never take room) for up to `hold_seconds` / `hold_packets` and
replayed in order once `map_ssrc` (or `user_for_ssrc`) knows the user. Frames that fail DAVE are
dropped before Opus; the Opus stream conceals the gap. After `failure_run` DAVE failures in a
row from one user (with our session ready), `on_dave_failure_run(user_id)` is called once per
run: the adapter answers with op 31 (dave_mls_invalid_commit_welcome) to rebuild the group.

Thread model: `handle` runs on whatever thread reads the socket (discord.py: its SocketReader
thread); `map_ssrc` and friends may come from the event loop. A lock serialises them; `sink`
and `on_dave_failure_run` are called on the `handle` thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from dvm.server.voice import dave as e2ee
from dvm.server.voice import opus, rtp, transport

log = logging.getLogger(__name__)

HOLD_SECONDS = 1.0
HOLD_PACKETS = 50
MAX_HELD_SSRCS = 64
MAX_IGNORED_SSRCS = 1024  # video/RTX SSRCs remembered; the oldest are forgotten past this
FAILURE_RUN = 36

_COUNTERS = (
    "packets",
    "rtcp",
    "bad_rtp",
    "non_opus",
    "transport_failed",
    "bad_payload",
    "unknown_ssrc_held",
    "unknown_ssrc_replayed",
    "unknown_ssrc_dropped",
    "dave_decrypted",
    "dave_passthrough",
    "dave_silence",
    "dave_off",
    "opus_decoded",
    "opus_failed",
    "opus_late",
    "plc_frames",
    "dave_failure_runs",
    "sink_errors",
    "internal_errors",
)


class Receiver:
    def __init__(
        self,
        mode: str,
        secret_key: bytes | list[int],
        dave: Callable[[], object | None],
        user_for_ssrc: Callable[[int], str | None],
        sink: Callable[[str, bytes], None],
        *,
        on_dave_failure_run: Callable[[str], None] | None = None,
        hold_seconds: float = HOLD_SECONDS,
        hold_packets: int = HOLD_PACKETS,
        failure_run: int = FAILURE_RUN,
        opus_backend: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cipher = transport.Cipher(mode, secret_key)
        self._dave = dave
        self._user_for_ssrc = user_for_ssrc
        self._sink = sink
        self._on_run = on_dave_failure_run
        self._hold_seconds = hold_seconds
        self._hold_packets = hold_packets
        self._failure_run = failure_run
        self._opus_backend = opus_backend
        self._clock = clock
        self._lock = threading.RLock()
        self._users: dict[int, str] = {}
        self._ignored: OrderedDict[int, None] = OrderedDict()  # an ordered set, bounded
        self._streams: dict[int, opus.OpusStream] = {}
        self._stream_user: dict[int, str] = {}
        self._held: OrderedDict[int, deque[tuple[float, int, bytes]]] = OrderedDict()
        self._runs: dict[str, int] = {}
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._dave_failed: dict[str, int] = dict.fromkeys(e2ee.REASONS, 0)
        self._per_user: dict[str, dict[str, int]] = {}

    # ---- configuration from the voice gateway -------------------------------------------

    def set_key(self, mode: str, secret_key: bytes | list[int]) -> None:
        """A new session description (op 4 after a reconnect): new mode/key."""
        cipher = transport.Cipher(mode, secret_key)
        with self._lock:
            self._cipher = cipher

    def map_ssrc(self, ssrc: int, user_id: str) -> None:
        """SSRC -> user (voice op 5 SPEAKING / op 12); replays what was held for the SSRC."""
        with self._lock:
            user_id = str(user_id)
            if self._stream_user.get(ssrc) not in (None, user_id):
                self._streams.pop(ssrc, None)  # SSRC reused by someone else: a fresh decoder
            self._users[ssrc] = user_id
            self._ignored.pop(ssrc, None)
            self._replay(ssrc, user_id)

    def ignore_ssrc(self, ssrc: int) -> None:
        """A video / RTX SSRC (op 12 video_ssrc, rtx_ssrc): counted as non_opus and dropped."""
        with self._lock:
            self._ignored[ssrc] = None
            while len(self._ignored) > MAX_IGNORED_SSRCS:
                self._ignored.popitem(last=False)
            self._drop_held(ssrc)

    def forget_user(self, user_id: str) -> None:
        """The user left (op 13): forget their SSRCs and decoders."""
        with self._lock:
            user_id = str(user_id)
            for ssrc in [s for s, u in self._users.items() if u == user_id]:
                del self._users[ssrc]
                self._streams.pop(ssrc, None)
                self._stream_user.pop(ssrc, None)
            self._runs.pop(user_id, None)
            self._per_user.pop(user_id, None)  # a long call's passers-by leave no counters behind

    # ---- the packet path ------------------------------------------------------------------

    def handle(self, packet: bytes) -> None:
        """One UDP datagram. Never raises."""
        try:
            with self._lock:
                self._handle(packet)
        except Exception:  # a bug of ours must not stop the socket reader
            log.exception("voice receiver: unexpected error")
            with self._lock:
                self._counts["internal_errors"] += 1

    def _handle(self, packet: bytes) -> None:
        counts = self._counts
        counts["packets"] += 1
        self._expire_held()
        if rtp.is_rtcp(packet):
            counts["rtcp"] += 1
            return
        try:
            header = rtp.parse(packet)
        except rtp.RtpError:
            counts["bad_rtp"] += 1
            return
        if header.payload_type != rtp.OPUS_PAYLOAD_TYPE or header.ssrc in self._ignored:
            counts["non_opus"] += 1
            return
        try:
            payload = self._cipher.decrypt(packet, header)
        except transport.TransportError:
            counts["transport_failed"] += 1
            return
        except rtp.RtpError:
            counts["bad_payload"] += 1
            return
        if not payload:
            counts["bad_payload"] += 1
            return
        ssrc = header.ssrc
        user_id = self._users.get(ssrc)
        if user_id is None:
            user_id = self._lookup(ssrc)
        if user_id is None:
            self._hold(ssrc, header.sequence, payload)
            return
        if ssrc in self._held:
            self._replay(ssrc, user_id)
        self._media(ssrc, user_id, header.sequence, payload)

    def _lookup(self, ssrc: int) -> str | None:
        try:
            user = self._user_for_ssrc(ssrc)
        except Exception:  # noqa: BLE001 - an adapter lookup failure means an unmapped SSRC
            user = None
        if user is None:
            return None
        self._users[ssrc] = str(user)
        return str(user)

    def _media(self, ssrc: int, user_id: str, sequence: int, payload: bytes) -> None:
        counts = self._counts
        try:
            session = self._dave()
        except Exception:  # noqa: BLE001 - no DAVE session: the frame is counted as undecryptable
            session = None
        outcome = e2ee.decrypt(session, user_id, payload)
        user_counts = self._per_user.setdefault(user_id, {})
        user_counts[outcome.label] = user_counts.get(outcome.label, 0) + 1
        if not outcome.ok:
            self._dave_failed[outcome.reason] += 1
            if outcome.reason in ("no_decryptor", "unencrypted", "no_key", "error"):
                self._failure(user_id)
            return
        counts["dave_" + outcome.kind] += 1
        if outcome.kind in (e2ee.DECRYPTED, e2ee.PASSTHROUGH):
            self._runs[user_id] = 0
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = opus.OpusStream(self._opus_backend)
            self._stream_user[ssrc] = user_id
        result = stream.feed(sequence, outcome.frame)
        counts["opus_" + result.status] += 1
        counts["plc_frames"] += result.concealed
        if result.pcm:
            try:
                self._sink(user_id, result.pcm)
            except Exception:
                counts["sink_errors"] += 1
                log.exception("voice receiver: sink failed")

    def _failure(self, user_id: str) -> None:
        run = self._runs.get(user_id, 0) + 1
        self._runs[user_id] = run
        if run == self._failure_run:
            self._counts["dave_failure_runs"] += 1
            self._runs[user_id] = 0
            if self._on_run is not None:
                try:
                    self._on_run(user_id)
                except Exception:
                    log.exception("voice receiver: on_dave_failure_run failed")

    # ---- early packets from unmapped SSRCs -------------------------------------------------

    def _hold(self, ssrc: int, sequence: int, payload: bytes) -> None:
        queue = self._held.get(ssrc)
        if queue is None:
            if len(self._held) >= MAX_HELD_SSRCS:
                oldest = next(iter(self._held))
                self._drop_held(oldest)
            queue = self._held[ssrc] = deque()
        if len(queue) >= self._hold_packets:
            queue.popleft()
            self._counts["unknown_ssrc_dropped"] += 1
        queue.append((self._clock(), sequence, payload))
        self._counts["unknown_ssrc_held"] += 1

    def _drop_held(self, ssrc: int) -> None:
        queue = self._held.pop(ssrc, None)
        if queue:
            self._counts["unknown_ssrc_dropped"] += len(queue)

    def _expire_held(self) -> None:
        if not self._held:
            return
        deadline = self._clock() - self._hold_seconds
        for ssrc in list(self._held):
            queue = self._held[ssrc]
            while queue and queue[0][0] < deadline:
                queue.popleft()
                self._counts["unknown_ssrc_dropped"] += 1
            if not queue:
                del self._held[ssrc]

    def _replay(self, ssrc: int, user_id: str) -> None:
        queue = self._held.pop(ssrc, None)
        while queue:
            _, sequence, payload = queue.popleft()
            self._counts["unknown_ssrc_replayed"] += 1
            self._media(ssrc, user_id, sequence, payload)

    # ---- figures -----------------------------------------------------------------------------

    def stats(self) -> dict:
        with self._lock:
            out: dict = dict(self._counts)
            out["held_now"] = sum(len(q) for q in self._held.values())
            out["dave_failed"] = dict(self._dave_failed)
            out["dave_failed_total"] = sum(self._dave_failed.values())
            out["ssrcs"] = {ssrc: user for ssrc, user in self._users.items()}
            out["per_user"] = {user: dict(c) for user, c in self._per_user.items()}
            out["transport_mode"] = self._cipher.mode
            out["opus"] = opus.backend()
            return out


def check_stats(stats: dict) -> None:
    """Raise AssertionError unless every packet is accounted for exactly once."""
    terminal = (
        stats["rtcp"]
        + stats["bad_rtp"]
        + stats["non_opus"]
        + stats["transport_failed"]
        + stats["bad_payload"]
        + stats["unknown_ssrc_dropped"]
        + stats["held_now"]
        + stats["dave_failed_total"]
        + stats["opus_decoded"]
        + stats["opus_failed"]
        + stats["opus_late"]
        + stats["internal_errors"]
    )
    assert stats["packets"] == terminal, f"{stats['packets']} packets, {terminal} outcomes"
    passed = stats["dave_decrypted"] + stats["dave_passthrough"] + stats["dave_silence"] + stats["dave_off"]
    assert passed == stats["opus_decoded"] + stats["opus_failed"] + stats["opus_late"], "DAVE/Opus mismatch"
    assert stats["unknown_ssrc_held"] == (
        stats["unknown_ssrc_replayed"] + stats["unknown_ssrc_dropped"] + stats["held_now"]
    ), "held packets unaccounted"
