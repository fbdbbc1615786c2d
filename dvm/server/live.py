"""Live captions: the pieces the pipeline uses to show text while people talk and to end an
utterance as soon as it is clearly over.

- A *speculation* is a decode of an utterance started at a short pause (``speculative_pause_ms``).
  If the speaker stays quiet, its text becomes the final line without a second decode; if speech
  resumes first, it is wasted.
- *Adaptive endpointing*: when the speculative text ends a sentence, the utterance ends after
  ``early_endpoint_ms`` of quiet instead of the full ``silence_timeout_ms``.
- An *interim* is a decode of the speech so far, every ``interim_interval_ms`` once a speaker has
  talked for ``interim_after_ms``; published to the live transcript resource marked as interim,
  never stored, replaced by the final line. Interims run only when no final or speculative decode
  is waiting, one at a time, on their own worker at the lowest CPU priority, and are discarded when
  their utterance has ended.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import numpy as np

from dvm.server.speech import SAMPLE_RATE, Interim, InterimRequest, Speculation
from dvm.server.threads import cpu_seconds, lower_this_thread
from dvm.server.vad import WINDOW

if TYPE_CHECKING:
    from dvm.server.speech import SpeakerState

__all__ = ["Interim", "InterimRequest", "LiveCaptions", "Speculation", "sentence_final"]

log = logging.getLogger("dvm.server.pipeline")
INTERIM_NICE = 19  # the interim thread's priority: the lowest, so it only uses cycles finals leave

# A sentence that ends in one of these words is probably not over ("... and", "... because").
_TRAILING = {
    "and", "but", "or", "so", "because", "if", "then", "that", "which", "who", "when", "while", "although",
    "though", "the", "a", "an", "to", "of", "for", "with", "in", "on", "at", "my", "your", "our", "their",
    "is", "are", "was", "were", "um", "uh", "like",
}
# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "no", "approx"}
_FINAL = re.compile(r"[.!?…。！？]['\")\]]*$")


def sentence_final(text: str) -> bool:
    """Whether ``text`` reads as a finished sentence: final punctuation, not after an abbreviation,
    and not ending on a conjunction, article or filler."""
    text = (text or "").strip()
    if not text or not _FINAL.search(text) or text.endswith("..."):
        return False
    words = re.findall(r"[\w'.]+", text.lower())
    if not words:
        return False
    last = words[-1].rstrip(".")
    return last not in _ABBREVIATIONS and last not in _TRAILING


class LiveCaptions:
    """The live-caption paths of dvm.server.pipeline.Pipeline (a mixin over its state): speculation at a
    pause, the early endpoint, interims on their own low-priority worker, and their cost counters."""

    def _live_quiet(self, sp: SpeakerState, quiet_s: float) -> None:
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

    def _maybe_interim(self, sp: SpeakerState, now: float) -> None:
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

    def _interim_worker(self) -> None:
        """Interims run on their own engine in a thread at the lowest CPU priority, so the OS scheduler
        gives every cycle a final or speculative decode wants to those first; interims use what is left."""
        engine = self._load_engine()
        if engine is None:
            return
        self._set_threads(engine, 1)
        self.interim_priority = lower_this_thread(INTERIM_NICE)
        rest_until = 0.0
        while True:
            with self._cond:
                while self._running and (not self._interim_queue or time.monotonic() < rest_until):
                    resting = rest_until - time.monotonic()  # idle: wake on notify (or every 0.5 s), not by polling
                    self._cond.wait(timeout=min(0.5, resting) if self._interim_queue and resting > 0 else 0.5)
                if not self._running:
                    break
                job = self._interim_queue.pop(next(iter(self._interim_queue)))
                self._interim_in_flight += 1
            began = time.monotonic()  # CPU time is real time, whatever clock the pipeline runs on
            self._run_interim(engine, job)
            # duty cycle: after an interim of d seconds rest d * (1/duty - 1), so interims take at most
            # ``interim_duty`` of one core however many people talk at once
            duty = min(1.0, max(0.05, self.settings.interim_duty))
            ended = time.monotonic()
            rest_until = ended + (ended - began) * (1 / duty - 1)
        engine.close()

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

    def live_stats(self) -> dict:
        """Cost accounting of live captions, and CPU seconds spent per second of audio received."""
        c = self.counters
        audio_s = self.counters["samples_in"] / SAMPLE_RATE
        now_cpu = cpu_seconds()
        cpu = now_cpu - self._cpu_start if now_cpu is not None and self._cpu_start is not None else None
        firsts = sorted(self.first_interim_latencies)
        return {
            "enabled": self.settings.live,
            "speculative": {"started": c["spec_started"], "used": c["spec_used"], "wasted": c["spec_wasted"],
                            "dropped": c["spec_dropped"], "skipped": c["spec_skipped"]},
            "early_endpoints": c["early_endpoints"], "interim_priority": self.interim_priority,
            "interim": {"decodes": c["interim_decodes"], "published": c["interim_published"], "stale": c["interim_stale"],
                        "superseded": c["interim_superseded"], "skipped_busy": c["interim_skipped_busy"],
                        "duty": self.settings.interim_duty,
                        "first_p50_s": round(firsts[len(firsts) // 2], 3) if firsts else None},
            "cpu_s_per_audio_s": round(cpu / audio_s, 4) if audio_s > 0 and cpu is not None else None,
        }
