"""Per-speaker audio in, transcript lines out.

    48 kHz stereo s16 PCM (per speaker) -> 16 kHz mono -> Silero VAD -> utterances
        -> bounded queue -> W workers (one loaded engine each) -> per-speaker ordered commit -> store

Utterances end after ``silence_timeout_ms`` of non-speech (measured by the VAD on audio that
arrives, or by the clock when a speaker's packets stop, as Discord stops sending during silence),
or are cut at ``buffer_duration_s``. Speech shorter than ``min_buffer_ms`` is ignored.

Overload policy: the queue holds at most ``queue_size`` utterances; when a new one arrives and
the queue is full, the *oldest waiting* utterance is dropped (stored as a line with status
"dropped", counted), because fresh speech matters more in a live call than a stale backlog.
A transcription that raises is stored with status "failed" and counted; the pipeline goes on.
Lines of one speaker are committed in the order that speaker spoke, whatever worker finishes first.

Live captions (``settings.live``, see dvm.server.live): a short pause starts a speculative decode
whose text becomes the line when the speaker stays quiet; a sentence-final speculative text ends
the utterance after ``early_endpoint_ms``; long speech gets interim hypotheses (never stored),
decoded only when no final or speculative work waits.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import numpy as np

from dvm.server.config import Settings
from dvm.server.live import LiveCaptions
from dvm.server.speech import SAMPLE_RATE, Interim, InterimRequest, Line, SpeakerState, Speculation, Utterance
from dvm.server.threads import cpu_seconds
from dvm.server.vad import WINDOW
from dvm.server.workers import Workers

log = logging.getLogger("dvm.server.pipeline")
SPEAKER_IDLE_EVICT_S = 600.0  # a speaker silent this long (all lines committed) is forgotten

__all__ = ["Line", "Pipeline", "Utterance"]


class Pipeline(LiveCaptions, Workers):
    """Speakers' audio in, ordered transcript lines out; the live-caption paths come from LiveCaptions and
    the decode workers from Workers (mixins over this object's state)."""

    def __init__(self, engine_factory: Callable[[], object], store, settings: Settings,
                 on_line: Callable[[Line], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.engine_factory = engine_factory
        self.store = store
        self.settings = settings
        self.on_line = on_line
        self.clock = clock
        self._speakers: dict[tuple[str, str], SpeakerState] = {}
        self._session_t0: dict[str, float] = {}
        self._queue: collections.deque[Utterance] = collections.deque()
        self._cond = threading.Condition()
        self._commit_lock = threading.Lock()
        self._next_commit: dict[tuple[str, str], int] = collections.defaultdict(int)
        self._pending: dict[tuple[str, str], dict[int, Line]] = collections.defaultdict(dict)
        self._feed_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._ticker: threading.Thread | None = None
        self._running = False
        self._engine_info: dict = {}
        self._ready = threading.Barrier(max(1, settings.workers) + 1 + (1 if settings.live else 0))
        self.interim_priority: str | None = None
        self.counters = collections.Counter()
        self.on_interim: Callable[[Interim], None] | None = None
        self.last_store_error: str | None = None
        self._last_eviction = 0.0
        self._interim_queue: dict[tuple[str, str], InterimRequest] = {}  # latest request per speaker, FIFO
        self._interim_in_flight = 0
        self._interims: dict[tuple[str, str], Interim] = {}
        self.first_interim_latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._cpu_start = cpu_seconds()
        # CPU threads the workers share: each holds its own ``threads`` while decoding and may borrow idle ones
        self._cores = self._cores_free = max(1, settings.workers) * max(1, settings.engine.threads)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._load_errors: list[str] = []
        for i in range(max(1, self.settings.workers)):
            thread = threading.Thread(target=self._worker, name=f"dvm-worker-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        if self.settings.live:
            thread = threading.Thread(target=self._interim_worker, name="dvm-interim", daemon=True)
            thread.start()
            self._workers.append(thread)
        self._ready.wait()  # every worker has loaded its engine (or failed to)
        if self._load_errors:
            self.stop(drain=False)
            raise RuntimeError(f"transcriber failed to load: {self._load_errors[0]}")
        self._ticker = threading.Thread(target=self._tick, name="dvm-silence-ticker", daemon=True)
        self._ticker.start()

    def stop(self, drain: bool = True, timeout: float = 120.0) -> bool:
        """Stop the workers; with ``drain``, first cut every open utterance and wait up to ``timeout`` for
        the decodes in flight to commit. Returns False when that wait ran out."""
        drained = True
        if drain:
            for session_id in list(self._session_t0):
                self.flush(session_id)
            drained = self.wait_idle(timeout)
        with self._cond:
            self._running = False
            self._cond.notify_all()
        for thread in self._workers:
            thread.join(timeout=30)
        self._workers.clear()
        return drained

    def begin(self, session_id: str) -> None:
        """Mark the session's time zero (lines' start/end are relative to it)."""
        self._session_t0.setdefault(session_id, self.clock())

    # ------------------------------------------------------------------ input

    def feed(self, session_id: str, speaker_id: str, speaker_name: str, pcm: bytes) -> None:
        """Audio of one speaker: 48 kHz stereo s16le, any length (Discord gives 20 ms frames)."""
        now = self.clock()
        with self._feed_lock:
            self.begin(session_id)
            key = (session_id, str(speaker_id))
            speaker = self._speakers.get(key)
            if speaker is None:
                speaker = SpeakerState(session_id, str(speaker_id), speaker_name)
                self._speakers[key] = speaker
            speaker.name = speaker_name or speaker.name
            samples = speaker.resample(pcm)
            # Discord sends nothing while someone is silent: when audio resumes after a gap, move the
            # speaker's time anchor so sample positions map onto session time again.
            session_now = now - self._session_t0[session_id]
            drift = session_now - (speaker.anchor + (speaker.fed + samples.size) / SAMPLE_RATE)
            if drift > 0.1 or speaker.fed == 0:
                speaker.anchor += drift
            speaker.fed += samples.size
            self.counters["samples_in"] += samples.size
            speaker.last_audio_wall = now
            self.counters["frames_in"] += 1
            self._advance(speaker, samples, now)

    def _advance(self, sp: SpeakerState, samples: np.ndarray, now: float) -> None:
        if samples.size == 0:
            return
        sp.vad_buffer.append(samples)
        probs = sp.vad.process(samples)
        if probs.size == 0:
            return
        joined = np.concatenate(sp.vad_buffer)
        windows = joined[: probs.size * WINDOW].reshape(probs.size, WINDOW)
        rest = joined[probs.size * WINDOW:]
        sp.vad_buffer = [rest] if rest.size else []
        silence_limit = max(1, int(self.settings.silence_timeout_ms / 1000 * SAMPLE_RATE / WINDOW))
        max_windows = max(1, int(self.settings.buffer_duration_s * SAMPLE_RATE / WINDOW))
        for prob, window in zip(probs, windows):
            sp.position += WINDOW
            t = sp.anchor + sp.position / SAMPLE_RATE
            if not sp.in_speech:
                if prob >= self.settings.vad_threshold:
                    sp.in_speech = True
                    sp.speech = list(sp.preroll) + [window]
                    sp.start = max(0.0, t - (len(sp.preroll) + 1) * WINDOW / SAMPLE_RATE)
                    sp.speech_windows, sp.silence_windows = 1, 0
                    sp.last_speech_time, sp.last_speech_wall = t, now
                    sp.voiced = len(sp.speech)
                    sp.speech_started_wall = sp.last_interim_wall = now
                    sp.first_interim_done = False
                    sp.preroll.clear()
                else:
                    sp.preroll.append(window)
                continue
            sp.speech.append(window)
            if prob >= self.settings.vad_threshold - 0.15:  # hysteresis: stay in speech on softer frames
                if sp.spec is not None:  # speech resumed after the pause (heard, or after frames stopped): void
                    self._spec_stale(sp.spec)
                    sp.spec = None
                sp.speech_windows += 1
                sp.silence_windows = 0
                sp.last_speech_time, sp.last_speech_wall = t, now
                sp.voiced = len(sp.speech)
                self._maybe_interim(sp, now)
            else:
                sp.silence_windows += 1
            if sp.silence_windows >= silence_limit:
                self._cut(sp, trailing=sp.silence_windows)
            elif len(sp.speech) >= max_windows:
                self._cut(sp, trailing=0, forced=True)
            elif sp.silence_windows:
                self._live_quiet(sp, max(sp.silence_windows * WINDOW / SAMPLE_RATE, now - sp.last_speech_wall))

    # ------------------------------------------------------------------ live captions

    def _cut(self, sp: SpeakerState, trailing: int, forced: bool = False) -> None:
        spec, sp.spec = sp.spec, None
        voiced = sp.voiced
        keep = len(sp.speech) - max(0, trailing - 3)  # keep ~100 ms of the trailing silence
        audio = np.concatenate(sp.speech[:keep]) if sp.speech else np.zeros(0, dtype=np.float32)
        speech_ms = sp.speech_windows * WINDOW / SAMPLE_RATE * 1000
        start_rel, end_rel = sp.start, sp.last_speech_time
        end_wall = sp.last_speech_wall
        overlap = []
        if forced and self.settings.overlap_ms > 0:
            n = max(1, int(self.settings.overlap_ms / 1000 * SAMPLE_RATE / WINDOW))
            overlap = sp.speech[-n:]
        sp.in_speech = False
        sp.speech, sp.speech_windows, sp.silence_windows = [], 0, 0
        if forced:  # a long monologue goes on: keep listening as speech
            sp.in_speech = True
            sp.speech = list(overlap)
            sp.start = sp.anchor + sp.position / SAMPLE_RATE - len(overlap) * WINDOW / SAMPLE_RATE
        if speech_ms < self.settings.min_buffer_ms:
            self.counters["ignored_short"] += 1
            if spec is not None:
                self._spec_stale(spec)
            return
        utterance = Utterance(sp.session_id, sp.speaker_id, sp.name, sp.seq, start_rel, end_rel, end_wall, audio)
        sp.seq += 1
        if spec is not None and not spec.stale and not forced and spec.voiced == voiced:
            if spec.done:  # the speculative text covers all of it: the line is ready now
                self.counters["spec_used"] += 1
                self._commit_text(utterance, spec.text or "")
            else:
                utterance.queued_at = self.clock()
                spec.utterance = utterance  # the worker on it finishes this utterance
            return
        if spec is not None:
            self._spec_stale(spec)
        self._enqueue(utterance)

    def flush(self, session_id: str) -> None:
        """End of a session (or of its audio): cut every open utterance now."""
        with self._feed_lock:
            for (sid, _), sp in list(self._speakers.items()):
                if sid == session_id and sp.in_speech:
                    self._cut(sp, trailing=sp.silence_windows)

    def _tick(self) -> None:
        while self._running:
            time.sleep(0.05)
            self.check_silence()

    def check_silence(self) -> None:
        """Cut utterances whose speaker went quiet without sending silence (Discord stops sending).

        Runs every 50 ms on a thread; a test driving a simulated clock calls it itself."""
        now = self.clock()
        timeout = self.settings.silence_timeout_ms / 1000
        with self._feed_lock:
            for sp in list(self._speakers.values()):
                if sp.in_speech and now - sp.last_speech_wall >= timeout:
                    self._cut(sp, trailing=sp.silence_windows)
                elif sp.in_speech:  # frames may have stopped (Discord sends none in silence): the clock measures the pause
                    self._live_quiet(sp, now - sp.last_speech_wall)
            if now - self._last_eviction >= 5.0:
                self._last_eviction = now
                self._evict_idle_speakers(now)

    def _evict_idle_speakers(self, now: float) -> None:
        """Forget speakers silent for ``SPEAKER_IDLE_EVICT_S`` whose lines are all committed (a long call
        with many passers-by, or random SSRCs, must not grow memory); one who returns starts afresh."""
        with self._commit_lock:
            for key, sp in list(self._speakers.items()):
                idle = now - max(sp.last_audio_wall, sp.last_speech_wall)
                if sp.in_speech or sp.spec is not None or idle < SPEAKER_IDLE_EVICT_S:
                    continue
                if self._pending.get(key) or self._next_commit.get(key, 0) != sp.seq or key in self._interims:
                    continue
                del self._speakers[key]
                self._next_commit.pop(key, None)
                self._pending.pop(key, None)
                self.counters["speakers_evicted"] += 1

    # ------------------------------------------------------------------ queue and workers

    def _enqueue(self, job: Utterance | Speculation) -> None:
        job.queued_at = self.clock()
        dropped = None
        with self._cond:
            if len(self._queue) >= self.settings.queue_size:
                dropped = self._queue.popleft()
            self._queue.append(job)
            self.counters["queued_total" if isinstance(job, Utterance) else "spec_queued"] += 1
            self._cond.notify()
        if isinstance(dropped, Speculation):
            self._spec_stale(dropped)
            self.counters["spec_dropped"] += 1
            dropped = dropped.utterance  # an utterance that was waiting on it is dropped with it
        if dropped is not None:
            self.counters["dropped"] += 1
            log.warning("queue full: dropped an utterance of %s (%.1f s)", dropped.speaker_name, dropped.end - dropped.start)
            self._finish(dropped, Line(dropped.session_id, dropped.speaker_id, dropped.speaker_name, dropped.start,
                                       dropped.end, "", self._engine_label(), self.clock() - dropped.end_wall, "dropped"))

    def _commit_text(self, utterance: Utterance, text: str, status: str = "ok") -> None:
        line = Line(utterance.session_id, utterance.speaker_id, utterance.speaker_name, utterance.start, utterance.end,
                    text, self._engine_label(), self.clock() - utterance.end_wall, status)
        self._finish(utterance, line)
        self.counters["done" if status == "ok" else "failed"] += 1

    def _finish(self, utterance: Utterance, line: Line) -> None:
        """Commit lines of one speaker strictly in order of speech."""
        key = (utterance.session_id, utterance.speaker_id)
        with self._commit_lock:
            self._pending[key][utterance.seq] = line
            while self._next_commit[key] in self._pending[key]:
                ready = self._pending[key].pop(self._next_commit[key])
                self._next_commit[key] += 1
                interim = self._interims.get(key)
                if interim is not None and interim.seq < self._next_commit[key]:
                    del self._interims[key]  # the final line replaces the interim one
                if self.store is not None:
                    self._store_line(ready)
                self.counters["committed"] += 1
                if self.on_line:
                    try:
                        self.on_line(ready)
                    except Exception as exc:  # noqa: BLE001 - a listener must not break the pipeline
                        log.warning("on_line listener failed: %s", exc)

    def _store_line(self, line: Line) -> None:
        """Commit one line; a failing store (disk full, I/O error) is counted and logged, the line still
        reaches the listeners, and the pipeline goes on: lines already committed are untouched."""
        try:
            self.store.add_line(line)
        except Exception as exc:  # noqa: BLE001 - any store failure: reported in stats, serving goes on
            self.counters["store_failed"] += 1
            self.last_store_error = f"{exc.__class__.__name__}: {exc}"
            log.error("could not store a line of %s: %s", line.speaker_name, exc)

    def _engine_label(self) -> str:
        cfg = self.settings.engine
        return f"{cfg.engine}/{cfg.model}/{cfg.quant}"

    # ------------------------------------------------------------------ introspection

    def wait_idle(self, timeout: float = 120.0, interims: bool = False) -> bool:
        """Wait until no final or speculative decode waits or runs (and, with ``interims``, no interim)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self.counters["in_flight"] or (interims and (self._interim_queue or self._interim_in_flight)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.2))
        return True

    def stats(self) -> dict:
        with self._cond:
            queued = len(self._queue)
            lag = (self.clock() - self._queue[0].queued_at) if self._queue else 0.0
        return {
            "queued": queued, "in_flight": self.counters["in_flight"], "done": self.counters["done"],
            "dropped": self.counters["dropped"], "failed": self.counters["failed"],
            "ignored_short": self.counters["ignored_short"], "committed": self.counters["committed"],
            "lag_s": round(lag, 3), "workers": max(1, self.settings.workers), "threads": self.settings.engine.threads,
            "speakers": len(self._speakers), "engine": self._engine_info or self.settings.engine.as_dict(),
            "overload_policy": f"queue of {self.settings.queue_size}; when full the oldest waiting utterance is dropped",
            "live": self.live_stats(), "lent_decodes": self.counters["lent_decodes"],
            "store_failed": self.counters["store_failed"], "last_store_error": self.last_store_error,
        }


