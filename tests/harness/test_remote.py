"""The remote engine against a small in-test HTTP server (errors, retries, the request it sends),
and a real round trip through whisper.cpp's own ``whisper-server`` (skipped when not built)."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import os
import socket
import subprocess
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dvm.harness import engines
from dvm.harness.engines import EngineConfig, remote
from dvm.errors import DvmError

SECRET = "sk-test-0123456789-very-secret"


# ---------------------------------------------------------------------------- the fake server


class FakeServer:
    """Answers POSTs from a script: each entry is (status, body bytes, delay seconds); the last repeats."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload, delay = fake.script[min(len(fake.requests), len(fake.script)) - 1]
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


OK = (200, json.dumps({"text": " And so my fellow Americans. "}).encode(), 0)


def fast_engine(url, **settings) -> remote.RemoteEngine:
    settings.setdefault("timeout", 5)
    return remote.RemoteEngine(EngineConfig(engine="remote", model="tiny.en"), url=url, **settings)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """Retries wait milliseconds, not seconds, in these tests."""
    monkeypatch.setattr(remote, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(remote, "_slots", None)  # the per-process limit starts fresh in every test
    for name in (remote.ENV_URL, remote.ENV_MODEL, remote.ENV_KEY, remote.ENV_TIMEOUT, remote.ENV_RETRIES):
        monkeypatch.delenv(name, raising=False)


def parse_multipart(request: dict) -> dict:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + request["headers"]["Content-Type"].encode() + b"\r\n\r\n" + request["body"])
    assert message.is_multipart()
    parts = {}
    for part in message.iter_parts():
        parts[part.get_param("name", header="content-disposition")] = part
    return parts


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


# ---------------------------------------------------------------------------- success


def test_request_carries_wav_fields_and_bearer(monkeypatch):
    monkeypatch.setenv(remote.ENV_KEY, SECRET)
    monkeypatch.setenv(remote.ENV_MODEL, "whisper-1")
    pcm = tone(1.5)
    with FakeServer([OK]) as server:
        monkeypatch.setenv(remote.ENV_URL, server.url + "/")
        engine = engines.create(EngineConfig(engine="remote", language="de"))
        assert engine.load() >= 0
        result = engine.transcribe(pcm, prompt="previous words")
    assert result.text == "And so my fellow Americans."
    assert result.audio_seconds == pytest.approx(1.5)
    assert result.timings["attempts"] == 1
    request = server.requests[0]
    assert request["path"] == "/v1/audio/transcriptions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    parts = parse_multipart(request)
    assert parts["model"].get_content().strip() == "whisper-1"
    assert parts["language"].get_content().strip() == "de"
    assert parts["temperature"].get_content().strip() == "0"
    assert parts["response_format"].get_content().strip() == "json"
    assert parts["prompt"].get_content().strip() == "previous words"
    assert "audio_ctx" not in parts and "beam_size" not in parts
    wav_part = parts["file"]
    assert wav_part.get_filename() == "audio.wav"
    assert wav_part.get_content_type() == "audio/wav"
    with wave.open(io.BytesIO(wav_part.get_payload(decode=True))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.getnframes() == pcm.size
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32767.0
    assert np.max(np.abs(samples - pcm)) < 1e-4
    info = engine.info()
    assert info["engine"] == "remote" and info["device"] == "remote" and info["authenticated"] is True
    assert SECRET not in json.dumps(info) and SECRET not in repr(engine.settings)


def test_whispercpp_fields_only_when_asked():
    with FakeServer([OK]) as server:
        engine = remote.RemoteEngine(EngineConfig(engine="remote", beam_size=3, audio_ctx="fit", language="auto"), url=server.url)
        engine.transcribe(tone(2.0))
    parts = parse_multipart(server.requests[0])
    assert parts["beam_size"].get_content().strip() == "3"
    from dvm.harness.engines.base import fitted_audio_ctx

    assert parts["audio_ctx"].get_content().strip() == str(fitted_audio_ctx(2.0))  # the same policy as locally
    assert "language" not in parts and "Authorization" not in server.requests[0]["headers"]


def test_verbose_json_segments():
    body = {"text": "one two", "language": "english",
            "segments": [{"start": 0.0, "end": 1.0, "text": " one"}, {"start": 1.0, "end": 2.0, "text": " two"}]}
    with FakeServer([(200, json.dumps(body).encode(), 0)]) as server:
        result = fast_engine(server.url, response_format="verbose_json").transcribe(tone(2.0))
    assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 1.0, "one"), (1.0, 2.0, "two")]
    assert result.language == "english"
    assert parse_multipart(server.requests[0])["response_format"].get_content().strip() == "verbose_json"


@pytest.mark.parametrize("given, expected", [
    ("http://h:1", "http://h:1/v1/audio/transcriptions"),
    ("http://h:1/v1/", "http://h:1/v1/audio/transcriptions"),
    ("https://h/base/v1/audio/transcriptions", "https://h/base/v1/audio/transcriptions"),
])
def test_endpoint_url(given, expected):
    assert remote.endpoint_url(given) == expected


def test_missing_or_bad_url():
    with pytest.raises(DvmError, match="DVM_REMOTE_URL"):
        fast_engine(None).load()
    with pytest.raises(DvmError, match="http://host:port"):
        fast_engine("ftp://user:pw@host/").load()
    assert remote.redact_url("http://user:pw@host:8/x?key=1") == "http://host:8/x"


# ---------------------------------------------------------------------------- retries and errors


def test_500_then_success_is_retried():
    with FakeServer([(500, b'{"error":"busy"}', 0), (503, b"overloaded", 0), OK]) as server:
        engine = fast_engine(server.url, retries=3)
        result = engine.transcribe(tone(0.5))
    assert result.text == "And so my fellow Americans."
    assert len(server.requests) == 3 and result.timings["attempts"] == 3
    assert engine.counters == {"requests": 1, "attempts": 3, "retries": 2, "failures": 0}


def test_persistent_500_gives_up_after_retries():
    with FakeServer([(500, b'{"error":"model crashed"}', 0)]) as server:
        engine = fast_engine(server.url, retries=2)
        with pytest.raises(DvmError, match=r"failed after 3 attempts: .*HTTP 500: model crashed"):
            engine.transcribe(tone(0.5))
    assert len(server.requests) == 3
    assert engine.counters["failures"] == 1


def test_401_is_not_retried_and_key_stays_secret():
    echo = json.dumps({"error": {"message": f"invalid key {SECRET}"}}).encode()
    with FakeServer([(401, echo, 0)]) as server:
        engine = fast_engine(server.url, api_key=SECRET, retries=3)
        with pytest.raises(DvmError, match="HTTP 401") as caught:
            engine.transcribe(tone(0.5))
    assert len(server.requests) == 1
    assert SECRET not in str(caught.value)
    assert "DVM_REMOTE_API_KEY" in str(caught.value)


def test_404_names_the_endpoint_problem():
    with FakeServer([(404, b"File Not Found", 0)]) as server, \
            pytest.raises(DvmError, match="no transcription endpoint.*inference-path"):
        fast_engine(server.url).transcribe(tone(0.5))
    assert len(server.requests) == 1


def test_timeout_gives_a_clear_error_quickly():
    with FakeServer([(200, b'{"text":"late"}', 3)]) as server:
        engine = fast_engine(server.url, timeout=0.3, retries=3)
        started = time.monotonic()
        with pytest.raises(DvmError, match=r"no answer from http://127\.0\.0\.1:\d+/v1/audio/transcriptions within 0\.3 s"):
            engine.transcribe(tone(0.5))
        assert time.monotonic() - started < 2


def test_garbage_json():
    with FakeServer([(200, b"<html>proxy error page</html>", 0)]) as server, \
            pytest.raises(DvmError, match="not JSON: '<html>proxy error page"):
        fast_engine(server.url).transcribe(tone(0.5))
    with FakeServer([(200, b'{"txt": 1}', 0)]) as server, pytest.raises(DvmError, match="without a 'text' field"):
        fast_engine(server.url).transcribe(tone(0.5))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(DvmError, match="cannot reach.*connection refused"):
        fast_engine(url).load()
    engine = fast_engine(url, retries=2)
    started = time.monotonic()
    with pytest.raises(DvmError, match="failed after 3 attempts.*connection refused"):
        engine.transcribe(tone(0.5))
    assert time.monotonic() - started < 2
    assert engine.counters["retries"] == 2


def test_concurrency_limit():
    remote.set_concurrency_limit(2)
    with FakeServer([(200, b'{"text":"x"}', 0.2)]) as server:
        engine = fast_engine(server.url)
        started = time.monotonic()
        threads = [threading.Thread(target=engine.transcribe, args=(tone(0.2),)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # 4 requests of 0.2 s, two at a time: about 0.4 s, never 0.2 s
        assert time.monotonic() - started >= 0.38
    assert remote.concurrency_limit() == 2


# ---------------------------------------------------------------------------- the real whisper-server


def _whisper_server_binary() -> Path | None:
    from dvm.harness.variants import tools

    return tools.find_tool("whisper-server")


@pytest.fixture(scope="module")
def whisper_server():
    binary = _whisper_server_binary()
    if binary is None:
        pytest.skip("whisper-server is not built; build it with `nox -s build-whispercpp -- wheel` "
                    "(or `python -m dvm.harness.bench.anchor build wheel`)")
    from dvm.harness import models

    model = models.default_ggml_path()
    port = _free_port()
    process = subprocess.Popen([str(binary), "-m", str(model), "-t", "2", "--host", "127.0.0.1", "--port", str(port),
                                "--inference-path", remote.ENDPOINT, "-nf"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"whisper-server did not start: {process.stderr.read().decode(errors='replace')[-500:]}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_real_whisper_server_matches_local_engine(whisper_server, jfk_path):
    from dvm.harness.audio import load_audio

    pcm = load_audio(jfk_path)
    local = engines.create(EngineConfig(engine="whispercpp", model="tiny.en", threads=2))
    local.load()
    expected = local.transcribe(pcm).text
    local.close()
    engine = remote.RemoteEngine(EngineConfig(engine="remote", model="tiny.en"), url=whisper_server)
    engine.load()
    result = engine.transcribe(pcm)
    assert " ".join(result.text.split()) == " ".join(expected.split())
    assert "ask not what your country can do for you" in result.text
    assert result.audio_seconds == pytest.approx(11.0, abs=0.01)
    assert engine.info()["engine_version"]  # whisper-server's Server header, or the generic name


def test_env_selects_remote_engine(monkeypatch):
    monkeypatch.setenv(remote.ENV_URL, "http://127.0.0.1:9")
    engine = engines.create(EngineConfig(engine="remote"))
    assert isinstance(engine, remote.RemoteEngine)
    assert engine.info()["endpoint"] == "http://127.0.0.1:9/v1/audio/transcriptions"
    assert os.environ[remote.ENV_URL] == "http://127.0.0.1:9"
