"""The request side of the remote engine (remote.py): the endpoint URL, the settings (keyword
arguments, else ``DVM_REMOTE_*``), and the ``multipart/form-data`` body that carries the audio."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from dataclasses import dataclass, field

from dvm.envvars import number
from dvm.errors import DvmError
from dvm.harness.engines.base import EngineConfig

ENDPOINT = "/v1/audio/transcriptions"
ENV_URL, ENV_MODEL, ENV_KEY = "DVM_REMOTE_URL", "DVM_REMOTE_MODEL", "DVM_REMOTE_API_KEY"
ENV_TIMEOUT, ENV_RETRIES, ENV_CONCURRENCY = "DVM_REMOTE_TIMEOUT", "DVM_REMOTE_RETRIES", "DVM_REMOTE_CONCURRENCY"
DEFAULT_TIMEOUT, DEFAULT_RETRIES, DEFAULT_CONCURRENCY = 60.0, 3, 4


def encode_multipart(fields: dict[str, str], files: list[tuple[str, str, str, bytes]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body (RFC 7578); returns (body, content type with boundary).

    ``files`` holds (field name, file name, content type, data).
    """
    boundary = "dvm-" + secrets.token_hex(16)

    def quoted(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"\r\n\r\n'.encode())
        parts.append(str(value).encode("utf-8") + b"\r\n")
    for name, filename, content_type, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"; '
                     f'filename="{quoted(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'.encode())
        parts.append(data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def endpoint_url(base_url: str) -> str:
    """``http://host:8080`` -> ``http://host:8080/v1/audio/transcriptions`` (``/v1`` or the full path are kept)."""
    url = base_url.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DvmError(f"remote URL must look like http://host:port, not {redact_url(base_url)!r}")
    if url.endswith(ENDPOINT):
        return url
    if url.endswith("/v1"):
        return url + ENDPOINT[len("/v1"):]
    return url + ENDPOINT


def redact_url(url: str) -> str:
    """The URL without user:password@ (safe to print); query strings are dropped too."""
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))


@dataclass
class RemoteSettings:
    url: str  # the full endpoint
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    response_format: str = "json"  # or "verbose_json" (segments; whisper-server then also runs language detection)
    prompt: str | None = None

    @classmethod
    def resolve(cls, config: EngineConfig, url: str | None = None, model: str | None = None,
                api_key: str | None = None, timeout: float | None = None, retries: int | None = None,
                response_format: str | None = None, prompt: str | None = None) -> RemoteSettings:
        base = url or os.environ.get(ENV_URL, "").strip()
        if not base:
            raise DvmError(f"the remote engine needs a server URL: pass --remote-url URL or set {ENV_URL}")
        fmt = response_format or "json"
        if fmt not in ("json", "verbose_json"):
            raise DvmError(f"remote response_format must be json or verbose_json, not {fmt!r}")
        return cls(
            url=endpoint_url(base),
            model=model or os.environ.get(ENV_MODEL, "").strip() or config.model,
            api_key=api_key if api_key is not None else (os.environ.get(ENV_KEY) or None),
            timeout=float(timeout if timeout is not None else number(os.environ, ENV_TIMEOUT, float, DEFAULT_TIMEOUT)),
            retries=int(retries if retries is not None else number(os.environ, ENV_RETRIES, int, DEFAULT_RETRIES)),
            response_format=fmt,
            prompt=prompt,
        )
