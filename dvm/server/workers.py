"""The pipeline's decode workers: each loads its own engine and takes final and speculative decodes
from the queue; CPU threads are a shared budget, and a lone decode borrows the idle workers' threads.
A mixin of dvm.server.pipeline.Pipeline (it works on the pipeline's queue, counters and condition)."""

from __future__ import annotations

import logging

from dvm.server.speech import Line, Speculation, Utterance

log = logging.getLogger("dvm.server.pipeline")


class Workers:
    def _load_engine(self):
        """A worker's own engine, or None after recording why it failed (start() reports it)."""
        try:
            engine = self.engine_factory()
            engine.load()
            if not self._engine_info:
                self._engine_info = {**engine.config.as_dict(), "version": engine.info().get("engine_version")}
            return engine
        except Exception as exc:  # noqa: BLE001 - reported by start()
            self._load_errors.append(f"{exc.__class__.__name__}: {exc}")
            return None
        finally:
            self._ready.wait()

    def _worker(self) -> None:
        engine = self._load_engine()
        if engine is None:
            return
        base = max(1, self.settings.engine.threads)
        lendable = self.settings.lend_threads and self._set_threads(engine, base)
        while True:
            job, cores = self._next_job(base, lendable)
            if job is None:
                break
            if lendable:
                self._set_threads(engine, cores)
            try:
                if isinstance(job, Speculation):
                    self._run_speculation(engine, job)
                else:
                    self._run_final(engine, job)
            finally:
                with self._cond:
                    self._cores_free += cores
                    self._cond.notify_all()
        engine.close()

    @staticmethod
    def _set_threads(engine, threads: int) -> bool:
        try:
            return bool(engine.set_threads(threads))
        except Exception as exc:  # noqa: BLE001 - an engine without the hook keeps its own threads
            log.debug("engine cannot change threads: %s", exc)
            return False

    def _next_job(self, base: int, lendable: bool) -> tuple[object | None, int]:
        """Wait for a final or speculative decode and for ``base`` free cores. One that leaves nothing
        waiting borrows every free core (the idle workers' threads), so a lone line is decoded on all of
        them. Returns (None, 0) when the pipeline stops and nothing waits."""
        with self._cond:
            while not (self._queue and self._cores_free >= base):
                if not self._running and not self._queue:
                    return None, 0
                self._cond.wait(timeout=0.5)
            job = self._queue.popleft()
            self.counters["in_flight"] += 1
            cores = self._cores_free if lendable and not self._queue else base
            if cores > base:
                self.counters["lent_decodes"] += 1
            self._cores_free -= cores
            return job, cores

    def _run_final(self, engine, utterance: Utterance) -> None:
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
        self._done_one(status_counter)

    def _done_one(self, counter: str | None = None) -> None:
        with self._cond:
            self.counters["in_flight"] -= 1
            if counter:
                self.counters[counter] += 1
            self._cond.notify_all()
