"""Any OpenAI-compatible transcription server as an engine: ``POST {url}/v1/audio/transcriptions``.

whisper.cpp's ``whisper-server`` (started with ``--inference-path /v1/audio/transcriptions``),
speaches, vLLM, OpenAI itself, or a GPU pool behind a load balancer all take the same request:
a multipart form with the audio ``file``, ``model``, ``language``, ``temperature``,
``response_format`` and an optional ``prompt``.

Settings come from keyword arguments, else from the environment:

    DVM_REMOTE_URL          base URL (``http://gpu-box:8080``; ``.../v1`` or the full endpoint also work)
    DVM_REMOTE_MODEL        model name the server expects (default: the config's model, e.g. ``tiny.en``)
    DVM_REMOTE_API_KEY      sent as ``Authorization: Bearer``; never printed, logged or recorded
    DVM_REMOTE_TIMEOUT      seconds to wait for the connection and for the answer (default 60)
    DVM_REMOTE_RETRIES      retries after the first attempt on 5xx/429/connection errors (default 3)
    DVM_REMOTE_CONCURRENCY  requests in flight at once from this process (default 4)

Only the standard library is used (``urllib.request``: it honours ``HTTPS_PROXY``/``NO_PROXY``).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from dvm.envvars import number
from dvm.errors import DvmError
from dvm.harness.audio import SAMPLE_RATE, wav_bytes
from dvm.harness.engines.base import Engine, EngineConfig, Segment, Transcript, resolve_audio_ctx
from dvm.harness.engines.remote_http import (  # noqa: F401 - ENV_URL, endpoint_url ... are this engine's API too
    DEFAULT_CONCURRENCY,
    ENDPOINT,
    ENV_CONCURRENCY,
    ENV_KEY,
    ENV_MODEL,
    ENV_RETRIES,
    ENV_TIMEOUT,
    ENV_URL,
    RemoteSettings,
    encode_multipart,
    endpoint_url,
    redact_url,
)

BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 8.0
AUDIO_FORMAT = "wav/pcm_s16le/16000Hz/mono"


# ---------------------------------------------------------------------------- the per-process limit

_slots_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None
_slots_size = 0


def concurrency_limit() -> int:
    return _semaphore()[1]


def set_concurrency_limit(n: int) -> None:
    """Requests in flight at once from this process, over all remote engines (default: DVM_REMOTE_CONCURRENCY or 4)."""
    global _slots, _slots_size
    if n < 1:
        raise DvmError(f"remote concurrency limit must be at least 1, not {n}")
    with _slots_lock:
        _slots, _slots_size = threading.BoundedSemaphore(n), n


def _semaphore() -> tuple[threading.BoundedSemaphore, int]:
    global _slots, _slots_size
    with _slots_lock:
        if _slots is None:
            size = int(number(os.environ, ENV_CONCURRENCY, int, DEFAULT_CONCURRENCY)) or 1
            _slots, _slots_size = threading.BoundedSemaphore(size), size
        return _slots, _slots_size


# ---------------------------------------------------------------------------- errors


class _RetryableError(Exception):
    """A failure worth another attempt (5xx, 429, connection refused/reset); its text is user-facing."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _server_message(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        error = data["error"]
        text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return min(BACKOFF_MAX_S, max(0.0, float(value))) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------- the engine


class RemoteEngine(Engine):
    """Transcribes by asking a server; ``load`` only checks that the server's port answers."""

    name = "remote"

    def __init__(self, config: EngineConfig, **settings):
        super().__init__(config)
        self._overrides = settings
        self.settings: RemoteSettings | None = None
        self.server_header: str | None = None
        self.counters = {"requests": 0, "attempts": 0, "retries": 0, "failures": 0}
        self._counter_lock = threading.Lock()

    # -- interface

    def load(self) -> float:
        started = time.perf_counter()
        self.settings = RemoteSettings.resolve(self.config, **self._overrides)
        parsed = urllib.parse.urlsplit(self.settings.url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        proxied = parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parsed.hostname)
        if proxied:  # the proxy decides; the first request will tell
            self.load_seconds = time.perf_counter() - started
            return self.load_seconds
        try:
            with socket.create_connection((parsed.hostname, port), timeout=min(self.settings.timeout, 10.0)):
                pass
        except OSError as exc:
            raise DvmError(f"cannot reach the remote server at {self._where()}: {_describe_oserror(exc)}") from None
        self.load_seconds = time.perf_counter() - started
        return self.load_seconds

    def transcribe(self, pcm: np.ndarray, prompt: str | None = None) -> Transcript:
        if self.settings is None:
            self.settings = RemoteSettings.resolve(self.config, **self._overrides)
        s = self.settings
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        audio_seconds = pcm.size / SAMPLE_RATE
        started = time.perf_counter()
        # WAV, not Opus: lossless at whisper's rate, so the server hears what a local engine would; every
        # OpenAI-compatible server takes it (whisper-server without its ffmpeg converter too); no encoding
        # time. 32 kB per second of audio is negligible on a LAN; Opus (~15x less) pays off only on a slow WAN.
        body, content_type = encode_multipart(self._fields(audio_seconds, prompt),
                                              [("file", "audio.wav", "audio/wav", wav_bytes(pcm))])
        headers = {"Content-Type": content_type, "Accept": "application/json", "User-Agent": "dvm-remote"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        semaphore, _ = _semaphore()
        self._count("requests")
        queue_s, attempt, last = 0.0, 0, None
        while True:
            attempt += 1
            self._count("attempts")
            waited = time.perf_counter()
            with semaphore:
                queue_s += time.perf_counter() - waited
                try:
                    data = self._post(body, headers)
                    break
                except _RetryableError as exc:
                    last = exc
                except DvmError:
                    self._count("failures")
                    raise
            if attempt > s.retries:
                self._count("failures")
                tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                raise DvmError(self._redact(f"remote transcription failed after {tries}: {last}")) from None
            self._count("retries")
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * (1 + 0.25 * random.random())
            time.sleep(last.retry_after if last.retry_after is not None else delay)
        seconds = time.perf_counter() - started
        return self._transcript(data, seconds, audio_seconds, {"queue_s": queue_s, "attempts": float(attempt),
                                                               "upload_bytes": float(len(body))})

    def info(self) -> dict:
        s = self.settings or RemoteSettings.resolve(self.config, **self._overrides)
        return {
            "engine": self.name,
            "engine_version": self.server_header or "openai-compatible",
            "build_features": {},
            "endpoint": redact_url(s.url),
            "remote_model": s.model,
            "authenticated": bool(s.api_key),  # whether a key is sent, never the key
            "audio_format": AUDIO_FORMAT,
            "response_format": s.response_format,
            "timeout_s": s.timeout,
            "retries": s.retries,
            "concurrency_limit": concurrency_limit(),
            "counters": dict(self.counters),
            "model_file": None,
            "model_sha256": None,
            "device": "remote",
        }

    # -- request

    def _fields(self, audio_seconds: float, prompt: str | None) -> dict[str, str]:
        s, c = self.settings, self.config
        fields = {"model": s.model, "temperature": "0", "response_format": s.response_format}
        if c.language and c.language != "auto":
            fields["language"] = c.language
        if prompt or s.prompt:
            fields["prompt"] = prompt or s.prompt
        # whisper.cpp server fields; sent only when the config asks for something other than the default
        if c.beam_size > 1:
            fields["beam_size"] = str(c.beam_size)
        audio_ctx = resolve_audio_ctx(c.audio_ctx, audio_seconds)
        if audio_ctx:
            fields["audio_ctx"] = str(audio_ctx)
        return fields

    def _post(self, body: bytes, headers: dict[str, str]) -> dict:
        s = self.settings
        request = urllib.request.Request(s.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=s.timeout) as response:
                self.server_header = response.headers.get("Server") or self.server_header
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:  # connecting or sending failed
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise DvmError(f"TLS certificate of {self._where()} not trusted: {reason.verify_message} "
                               "(set SSL_CERT_FILE to your CA bundle)") from None
            raise _RetryableError(f"{self._where()}: {_describe_oserror(reason)}") from None
        except TimeoutError:
            raise DvmError(f"no answer from {self._where()} within {s.timeout:g} s "
                           f"(raise {ENV_TIMEOUT} if the server is just slow)") from None
        except (http.client.HTTPException, ConnectionError) as exc:  # dropped while answering
            raise _RetryableError(f"{self._where()}: connection lost while waiting for the answer ({exc.__class__.__name__})") from None
        try:
            data = json.loads(raw)
        except ValueError:
            snippet = " ".join(raw[:80].decode("utf-8", errors="replace").split())
            raise DvmError(self._redact(f"{self._where()} answered with something that is not JSON: {snippet!r}")) from None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            if isinstance(data, dict) and data.get("error"):
                raise DvmError(self._redact(f"{self._where()} reported an error: {_server_message(raw)}"))
            raise DvmError(f"{self._where()} answered JSON without a 'text' field: {str(data)[:80]!r}")
        return data

    def _http_error(self, exc: urllib.error.HTTPError) -> Exception:
        try:
            body = exc.read()
        except Exception:  # noqa: BLE001 - the body is only a hint
            body = b""
        detail = self._redact(_server_message(body))
        detail = f": {detail}" if detail else ""
        code, where = exc.code, self._where()
        if code in (401, 403):
            hint = "check DVM_REMOTE_API_KEY" if self.settings.api_key else f"it needs an API key in {ENV_KEY}"
            return DvmError(f"{where} refused the request (HTTP {code}, {hint}){detail}")
        if code == 404:
            return DvmError(f"{where}: no transcription endpoint here (HTTP 404); check the URL "
                            f"(whisper-server needs --inference-path {ENDPOINT}){detail}")
        if code == 429 or code >= 500:
            return _RetryableError(f"{where}: HTTP {code}{detail}", _retry_after(exc.headers))
        return DvmError(f"{where} rejected the request (HTTP {code}){detail}")

    # -- helpers

    def _transcript(self, data: dict, seconds: float, audio_seconds: float, timings: dict) -> Transcript:
        text = " ".join(data["text"].split())
        segments = []
        for seg in data.get("segments") or []:
            if isinstance(seg, dict) and isinstance(seg.get("text"), str):
                segments.append(Segment(float(seg.get("start", 0.0)), float(seg.get("end", 0.0)), seg["text"].strip()))
        if not segments and text:
            segments = [Segment(0.0, audio_seconds, text)]
        language = data.get("language") if isinstance(data.get("language"), str) else self.config.language
        return Transcript(text, segments, seconds, audio_seconds, timings, language)

    def _where(self) -> str:
        return redact_url(self.settings.url) if self.settings else "the remote server"

    def _redact(self, text: str) -> str:
        key = self.settings.api_key if self.settings else None
        return text.replace(key, "<redacted>") if key else text

    def _count(self, name: str) -> None:
        with self._counter_lock:
            self.counters[name] += 1


def _describe_oserror(exc) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running on that port?)"
    if isinstance(exc, TimeoutError):
        return "timed out while connecting"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror or exc})"
    if isinstance(exc, OSError):
        return f"{exc.__class__.__name__}: {exc.strerror or exc}"
    return str(exc)
