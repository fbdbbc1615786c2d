"""Serving through a remote, OpenAI-compatible transcription service: the local pipeline (VAD,
ordering, SQLite) is unchanged, the words come from the service.

The service here is a real one on loopback: an HTTP server speaking the OpenAI transcription API
(multipart WAV in, JSON out) that runs whisper.cpp on what it receives. whisper.cpp's own
`whisper-server` is tested the same way in tests/harness/test_remote.py when it is built."""

from __future__ import annotations

import io
import json
import threading
import wave
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from dvm.harness import engines, scoring
from dvm.harness.engines import EngineConfig
from dvm.server import loadtest
from dvm.server.pipeline import Pipeline
from dvm.server.store import Store

from .test_pipeline import Collector, SimClock, clip, play_fast, settings


@pytest.fixture()
def service(monkeypatch):
    local = engines.create(EngineConfig(quant="q8_0", audio_ctx="fit", threads=2))
    local.load()
    lock = threading.Lock()
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            if self.path != "/v1/audio/transcriptions":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            form = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                    for part in BytesParser(policy=email_policy).parsebytes(head + body).iter_parts()}
            with wave.open(io.BytesIO(form["file"])) as wav:
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768
            with lock:
                requests.append({"model": form["model"].decode(), "seconds": pcm.size / 16000})
                text = local.transcribe(pcm).text
            body = json.dumps({"text": text}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DVM_REMOTE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("DVM_REMOTE_API_KEY", "test-key")
    yield requests
    server.shutdown()
    local.close()


def test_dialogue_through_a_remote_service(service, tmp_path):
    dialogue = clip("dialogue-call")
    remote = settings()
    remote.engine = EngineConfig(engine="remote", model="tiny.en")
    store = Store(tmp_path / "t.db")
    session = store.start_session("g", "G", "c", "C", remote.engine.as_dict())
    collect, clock = Collector(), SimClock()
    pipeline = Pipeline(lambda: engines.create(remote.engine), store, remote, on_line=collect, clock=clock)
    pipeline.start()
    try:
        play_fast(pipeline, clock, loadtest.schedule(loadtest.speaker_tracks(dialogue)), session)
        pipeline.flush(session)
        assert pipeline.wait_idle(60)
    finally:
        pipeline.stop()
    lines = store.get_lines(session)
    stats = pipeline.stats()["live"]
    decodes = stats["interim"]["decodes"] + stats["speculative"]["started"] - stats["speculative"]["skipped"] \
        - stats["speculative"]["used"]  # a used speculation is the line's decode: no second request
    assert [l["speaker_id"] for l in lines if l["status"] == "ok"] and len(lines) == len(dialogue.turns)
    assert len(service) == len(lines) + decodes  # every request accounted for: finals, speculations, interims
    assert {r["model"] for r in service} == {"tiny.en"}
    spoken = " ".join(t["text"] for t in sorted(dialogue.turns, key=lambda t: t["start"]))
    heard = " ".join(l["text"] for l in sorted(lines, key=lambda l: l["start"]))
    assert scoring.score(spoken, heard)["wer"] <= 0.2
    for speaker in ("A", "B"):
        assert len([l for l in lines if l["speaker_id"] == speaker]) == 2
