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
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dvm.server.config import Settings
from dvm.server.live import Interim, InterimRequest, Speculation, sentence_final
from dvm.server.vad import WINDOW, StreamingVad

log = logging.getLogger("dvm.server.pipeline")

SAMPLE_RATE = 16000
PREROLL_WINDOWS = 6  # ~190 ms of audio kept before the VAD fires, so first syllables are not cut


@dataclass
class Line:
    session_id: str
    speaker_id: str
    speaker_name: str
    start: float
    end: float
    text: str
    engine: str
    latency_s: float
    status: str = "ok"


@dataclass
class Utterance:
    session_id: str
    speaker_id: str
    speaker_name: str
    seq: int
    start: float  # seconds since the session's first audio
    end: float
    end_wall: float  # monotonic time of the end of speech (latency reference)
    pcm: np.ndarray
    queued_at: float = 0.0


class _Resampler:
    """48 kHz stereo s16 -> 16 kHz mono float32, stateful across chunks (PyAV/FFmpeg's swresample)."""

    def __init__(self):
        import av

        self._av = av
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, pcm: bytes) -> np.ndarray:
        samples = np.frombuffer(pcm, dtype="<i2")
        if samples.size < 2:
            return np.zeros(0, dtype=np.float32)
        samples = samples[: samples.size - samples.size % 2]
        frame = self._av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)


@dataclass
class _Speaker:
    session_id: str
    speaker_id: str
    name: str
    resample: _Resampler = field(default_factory=_Resampler)
    vad: StreamingVad = field(default_factory=StreamingVad)
    position: int = 0  # 16 kHz samples through the VAD
    fed: int = 0  # 16 kHz samples received
    anchor: float = 0.0  # session time of sample 0, moved forward across gaps in delivery
    in_speech: bool = False
    speech: list = field(default_factory=list)
    speech_windows: int = 0
    silence_windows: int = 0
    start: float = 0.0
    last_speech_time: float = 0.0
    last_speech_wall: float = 0.0
    last_audio_wall: float = 0.0
    preroll: collections.deque = field(default_factory=lambda: collections.deque(maxlen=PREROLL_WINDOWS))
    vad_buffer: list = field(default_factory=list)
    seq: int = 0
    voiced: int = 0  # len(speech) at the last voiced window
    spec: Speculation | None = None
    speech_started_wall: float = 0.0
    last_interim_wall: float = 0.0
    first_interim_done: bool = False


class Pipeline:
    def __init__(self, engine_factory: Callable[[], object], store, settings: Settings,
                 on_line: Callable[[Line], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.engine_factory = engine_factory
        self.store = store
        self.settings = settings
        self.on_line = on_line
        self.clock = clock
        self._speakers: dict[tuple[str, str], _Speaker] = {}
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
        self._ready = threading.Barrier(max(1, settings.workers) + 1)
        self.counters = collections.Counter()
        self.on_interim: Callable[[Interim], None] | None = None
        self._interim_queue: dict[tuple[str, str], InterimRequest] = {}  # latest request per speaker, FIFO
        self._interim_in_flight = 0
        self._interims: dict[tuple[str, str], Interim] = {}
        self.first_interim_latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._cpu_start = _cpu_seconds()

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
        self._ready.wait()  # every worker has loaded its engine (or failed to)
        if self._load_errors:
            self.stop(drain=False)
            raise RuntimeError(f"transcriber failed to load: {self._load_errors[0]}")
        self._ticker = threading.Thread(target=self._tick, name="dvm-silence-ticker", daemon=True)
        self._ticker.start()

    def stop(self, drain: bool = True) -> None:
        if drain:
            for session_id in list(self._session_t0):
                self.flush(session_id)
            self.wait_idle()
        with self._cond:
            self._running = False
            self._cond.notify_all()
        for thread in self._workers:
            thread.join(timeout=30)
        self._workers.clear()

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
                speaker = _Speaker(session_id, str(speaker_id), speaker_name)
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
            speaker.last_audio_wall = now
            self.counters["frames_in"] += 1
            self._advance(speaker, samples, now)

    def _advance(self, sp: _Speaker, samples: np.ndarray, now: float) -> None:
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
                if sp.silence_windows and sp.spec is not None:
                    self._spec_stale(sp.spec)  # speech resumed after the pause: the speculation is void
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

    def _live_quiet(self, sp: _Speaker, quiet_s: float) -> None:
        """A speaker in speech has been quiet for ``quiet_s``: speculate, or end the utterance early."""
        if not self.settings.live:
            return
        spec = sp.spec
        if spec is None:
            voiced_ms = sp.speech_windows * WINDOW / SAMPLE_RATE * 1000
            if quiet_s * 1000 >= self.settings.speculative_pause_ms and voiced_ms >= self.settings.min_buffer_ms:
                sp.spec = Speculation((sp.session_id, sp.speaker_id), sp.seq, sp.voiced, np.concatenate(sp.speech[: sp.voiced + 3]))
                self.counters["spec_started"] += 1
                self._enqueue(sp.spec)
            return
        if spec.done and not spec.stale and quiet_s * 1000 >= self.settings.early_endpoint_ms and sentence_final(spec.text or ""):
            self.counters["early_endpoints"] += 1
            self._cut(sp, trailing=len(sp.speech) - sp.voiced)

    def _spec_stale(self, spec: Speculation) -> None:
        if not spec.stale:
            spec.stale = True
            self.counters["spec_wasted"] += 1

    def _interims_allowed(self) -> bool:
        """Interim work yields: none while a final or speculative decode waits (the queue backs up)."""
        return self.settings.live and not self._queue

    def _maybe_interim(self, sp: _Speaker, now: float) -> None:
        if not self.settings.live:
            return
        talked_ms = len(sp.speech) * WINDOW / SAMPLE_RATE * 1000
        if talked_ms < self.settings.interim_after_ms or (now - sp.last_interim_wall) * 1000 < self.settings.interim_interval_ms:
            return
        sp.last_interim_wall = now
        if not self._interims_allowed():
            self.counters["interim_skipped_busy"] += 1
            return
        key = (sp.session_id, sp.speaker_id)
        request = InterimRequest(key, sp.seq, np.concatenate(sp.speech), sp.speech_started_wall)
        with self._cond:
            if self._interim_queue.pop(key, None) is not None:
                self.counters["interim_superseded"] += 1
            self._interim_queue[key] = request
            self._cond.notify()

    def interims(self, session_id: str) -> list[dict]:
        """The interim hypotheses of the utterances in progress in a session (never stored)."""
        with self._commit_lock:
            return [i.as_dict() for (sid, _), i in self._interims.items() if sid == session_id]

    def _cut(self, sp: _Speaker, trailing: int, forced: bool = False) -> None:
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

    # ------------------------------------------------------------------ queue and workers

    def _enqueue(self, job: Utterance | Speculation) -> None:
        if isinstance(job, Utterance):
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

    def _worker(self) -> None:
        try:
            engine = self.engine_factory()
            engine.load()
            if not self._engine_info:
                self._engine_info = {**engine.config.as_dict(), "version": engine.info().get("engine_version")}
        except Exception as exc:  # noqa: BLE001 - reported by start()
            self._load_errors.append(f"{exc.__class__.__name__}: {exc}")
            self._ready.wait()
            return
        self._ready.wait()
        while True:
            with self._cond:
                while self._running and not self._queue and not (self._interim_queue and not self._interim_in_flight):
                    self._cond.wait(timeout=0.5)
                if self._queue:
                    job = self._queue.popleft()
                    self.counters["in_flight"] += 1
                elif self._interim_queue and not self._interim_in_flight and self._running:
                    job = self._interim_queue.pop(next(iter(self._interim_queue)))
                    self._interim_in_flight += 1
                elif not self._running:
                    break
                else:
                    continue
            if isinstance(job, InterimRequest):
                self._run_interim(engine, job)
                continue
            if isinstance(job, Speculation):
                self._run_speculation(engine, job)
                continue
            utterance = job
            try:
                result = engine.transcribe(utterance.pcm)
                line = Line(utterance.session_id, utterance.speaker_id, utterance.speaker_name, utterance.start,
                            utterance.end, result.text.strip(), self._engine_label(), 0.0)
                status_counter = "done"
            except Exception as exc:  # noqa: BLE001 - one bad utterance must not stop the pipeline
                log.error("transcription failed for %s: %s", utterance.speaker_name, exc)
                line = Line(utterance.session_id, utterance.speaker_id, utterance.speaker_name, utterance.start,
                            utterance.end, "", self._engine_label(), 0.0, "failed")
                status_counter = "failed"
            line.latency_s = self.clock() - utterance.end_wall
            self._finish(utterance, line)
            with self._cond:
                self.counters["in_flight"] -= 1
                self.counters[status_counter] += 1
                self._cond.notify_all()
        engine.close()

    def _done_one(self, counter: str | None = None) -> None:
        with self._cond:
            self.counters["in_flight"] -= 1
            if counter:
                self.counters[counter] += 1
            self._cond.notify_all()

    def _run_speculation(self, engine, spec: Speculation) -> None:
        with self._feed_lock:
            skip = spec.stale and spec.utterance is None
        if skip:
            self.counters["spec_skipped"] += 1
            self._done_one()
            return
        try:
            text, failed = engine.transcribe(spec.pcm).text.strip(), False
        except Exception as exc:  # noqa: BLE001 - like a final decode: recorded, the pipeline goes on
            log.error("speculative transcription failed: %s", exc)
            text, failed = "", True
        with self._feed_lock:
            spec.text, spec.done = text, True
            utterance = spec.utterance
            if utterance is None and failed:
                self._spec_stale(spec)
            elif utterance is None and not spec.stale:
                sp = self._speakers.get(spec.key)
                if sp is not None and sp.spec is spec and sp.in_speech:  # quiet long enough already? end it now
                    audio_quiet = sp.silence_windows * WINDOW / SAMPLE_RATE
                    self._live_quiet(sp, max(audio_quiet, self.clock() - sp.last_speech_wall))
        if utterance is not None:
            if failed:
                self._commit_text(utterance, "", "failed")
            else:
                self.counters["spec_used"] += 1
                self._commit_text(utterance, text)
        self._done_one()

    def _run_interim(self, engine, request: InterimRequest) -> None:
        interim = None
        try:
            with self._feed_lock:
                sp = self._speakers.get(request.key)
                current = sp is not None and sp.in_speech and sp.seq == request.seq
            if not current:
                self.counters["interim_stale"] += 1
                return
            text = engine.transcribe(request.pcm).text.strip()
            self.counters["interim_decodes"] += 1
            with self._feed_lock:
                sp = self._speakers.get(request.key)
                if sp is None or not sp.in_speech or sp.seq != request.seq or not text:
                    self.counters["interim_stale"] += 1
                    return
                now = self.clock()
                interim = Interim(sp.session_id, sp.speaker_id, sp.name, request.seq, sp.start, text, now)
                if not sp.first_interim_done:
                    sp.first_interim_done = True
                    self.first_interim_latencies.append(now - request.speech_started_wall)
            with self._commit_lock:
                self._interims[request.key] = interim
            self.counters["interim_published"] += 1
        except Exception as exc:  # noqa: BLE001 - an interim is only a preview
            log.debug("interim transcription failed: %s", exc)
        finally:
            with self._cond:
                self._interim_in_flight -= 1
                self._cond.notify_all()
        if interim is not None and self.on_interim:
            try:
                self.on_interim(interim)
            except Exception as exc:  # noqa: BLE001 - a listener must not break the pipeline
                log.warning("on_interim listener failed: %s", exc)

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
                    self.store.add_line(ready)
                self.counters["committed"] += 1
                if self.on_line:
                    try:
                        self.on_line(ready)
                    except Exception as exc:  # noqa: BLE001 - a listener must not break the pipeline
                        log.warning("on_line listener failed: %s", exc)

    def _engine_label(self) -> str:
        cfg = self.settings.engine
        return f"{cfg.engine}/{cfg.model}/{cfg.quant}"

    # ------------------------------------------------------------------ introspection

    def wait_idle(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self.counters["in_flight"]:
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
            "live": self.live_stats(),
        }

    def live_stats(self) -> dict:
        """Cost accounting of live captions, and CPU seconds spent per second of audio received."""
        c = self.counters
        audio_s = sum(sp.fed for sp in list(self._speakers.values())) / SAMPLE_RATE
        now_cpu = _cpu_seconds()
        cpu = now_cpu - self._cpu_start if now_cpu is not None and self._cpu_start is not None else None
        firsts = sorted(self.first_interim_latencies)
        return {
            "enabled": self.settings.live,
            "speculative": {"started": c["spec_started"], "used": c["spec_used"], "wasted": c["spec_wasted"],
                            "dropped": c["spec_dropped"], "skipped": c["spec_skipped"]},
            "early_endpoints": c["early_endpoints"],
            "interim": {"decodes": c["interim_decodes"], "published": c["interim_published"], "stale": c["interim_stale"],
                        "superseded": c["interim_superseded"], "skipped_busy": c["interim_skipped_busy"],
                        "first_p50_s": round(firsts[len(firsts) // 2], 3) if firsts else None},
            "cpu_s_per_audio_s": round(cpu / audio_s, 4) if audio_s > 0 and cpu is not None else None,
        }


def _cpu_seconds() -> float | None:
    """User + system CPU seconds of this process (all threads), where the platform tells."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
