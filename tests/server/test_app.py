"""The MCP app through the SDK's own clients: in-memory (both protocol eras), stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import anyio
import httpx2
import mcp.types as mt
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from dvm.server.app import NOT_CONFIGURED, build_app, http_app, transcript_uri

from .conftest import FakePipeline, FakeVoice

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

PARAMS = {
    "join_my_voice_channel": ({}, []),
    "follow_me": ({"enabled": "boolean"}, ["enabled"]),
    "join_specific_channel": ({"guildId": "string", "channelId": "string"}, ["guildId", "channelId"]),
    "leave_voice_channel": ({}, []),
    "get_bot_status": ({}, []),
    "list_sessions": ({}, []),
    "get_transcript": ({"sessionId": "string"}, ["sessionId"]),
    "export_session": ({"sessionId": "string", "format": "string"}, ["sessionId"]),
    "search_transcripts": ({"query": "string"}, ["query"]),
    "get_hardware_profile": ({}, []),
    "get_benchmark_results": ({}, []),
}
DISCORD_TOOLS = {
    "join_my_voice_channel": {},
    "follow_me": {"enabled": True},
    "join_specific_channel": {"guildId": "1", "channelId": "2"},
    "leave_voice_channel": {},
}


def results_dir(tmp_path: Path) -> Path:
    """A minimal results tree: results/<platform>/run-*/results.json with one measured cell."""
    record = {"clip_id": "en-jfk", "reference": "x", "audio_seconds": 11.0, "median_rtf": 0.06, "min_rtf": 0.05,
              "median_s": 0.66, "spread": 0.01, "repeats": 3, "wer": 0.0, "cer": 0.0}
    run = {"platform_id": "linux-x86_64-test", "cells": [
        {"cell_id": "whispercpp-tiny.en-q8_0-t2", "config": {"engine": "whispercpp", "model": "tiny.en", "quant": "q8_0",
                                                             "threads": 2, "beam_size": 1}, "records": [record]}]}
    for name, platform in (("run-old", "linux-x86_64-test"), ("run-other", "darwin-arm64-neon")):
        d = tmp_path / "results" / platform / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({**run, "platform_id": platform}))
    os.utime(tmp_path / "results" / "linux-x86_64-test" / "run-old" / "results.json", (1, 1))
    return tmp_path / "results"


@pytest.fixture
def parts(store, tmp_path):
    pipeline = FakePipeline(store)
    voice = FakeVoice()
    harness = {"hardware_profile": lambda: {"platform_id": "linux-x86_64-test", "cpu": {"cores": 2}},
               "results_dirs": [results_dir(tmp_path)], "platform_id": "linux-x86_64-test"}
    return store, pipeline, voice, harness


async def call(client, tool, args=None):
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, result.content
    return result.structured_content


async def test_tools_are_listed_with_the_go_names_and_params(parts):
    store, pipeline, voice, harness = parts
    async with Client(build_app(store, pipeline, voice, harness)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(PARAMS)
    for name, (props, required) in PARAMS.items():
        schema = tools[name].input_schema
        assert {k: v["type"] for k, v in schema.get("properties", {}).items()} == props, name
        assert sorted(schema.get("required", [])) == sorted(required), name
        assert tools[name].description and tools[name].output_schema, name
    assert tools["export_session"].input_schema["properties"]["format"]["default"] == "json"


async def test_without_discord_the_voice_tools_fail_clearly_and_the_rest_works(parts):
    store, pipeline, _voice, harness = parts
    async with Client(build_app(store, pipeline, None, harness)) as client:
        for tool, args in DISCORD_TOOLS.items():
            result = await client.call_tool(tool, args)
            assert result.is_error, tool
            text = result.content[0].text
            assert NOT_CONFIGURED in text and "Traceback" not in text
        status = await call(client, "get_bot_status")
        assert status["discord"] == {"configured": False, "connected": False, "message": NOT_CONFIGURED}
        assert status["pipeline"]["workers"] == 1 and status["session"] is None
        assert (await call(client, "get_hardware_profile"))["cpu"] == {"cores": 2}
        bench = await call(client, "get_benchmark_results")
        assert bench["platform_id"] == "linux-x86_64-test"  # its own platform's run, though older
        assert bench["rows"][0]["engine"] == "whispercpp" and bench["rows"][0]["median_rtf"] == 0.06
        assert (await call(client, "list_sessions")) == {"sessions": []}


async def test_benchmark_results_missing_is_a_tool_error(store, tmp_path):
    app = build_app(store, FakePipeline(store), None, {"results_dirs": [tmp_path / "none"], "platform_id": "x"})
    async with Client(app) as client:
        result = await client.call_tool("get_benchmark_results", {})
    assert result.is_error and "run `dvm bench` first" in result.content[0].text


async def test_join_speak_transcript_export_leave(parts):
    store, pipeline, voice, harness = parts
    app = build_app(store, pipeline, voice, harness)
    async with Client(app) as client:
        joined = await call(client, "join_my_voice_channel")
        sid = joined["session_id"]
        assert joined["channel_name"] == "General" and joined["transcript_uri"] == f"transcript://{sid}"
        assert pipeline.begun == [sid]
        voice.speak("u1", "Alice", "hello everyone")
        voice.speak("u2", "Bob", "hi Alice, <ready>?")
        voice.speak("u1", "Alice", "<dropped>")
        voice.speak("u1", "Alice", "let us start")

        status = await call(client, "get_bot_status")
        assert status["discord"]["connected"] is True and status["discord"]["packets"] == {"decrypted": 7}
        assert status["session"]["id"] == sid and status["session"]["line_count"] == 4

        transcript = await call(client, "get_transcript", {"sessionId": sid})
        assert [(ln["speaker_name"], ln["text"], ln["status"]) for ln in transcript["lines"]] == [
            ("Alice", "hello everyone", "ok"), ("Bob", "hi Alice, <ready>?", "ok"), ("Alice", "", "dropped"),
            ("Alice", "let us start", "ok")]
        assert "[00:02] Bob: hi Alice, <ready>?" in transcript["text"]
        assert transcript["session"]["engine"] == {"engine": "fake", "model": "tiny"}

        exported = {}
        for fmt in ("json", "markdown", "srt", "vtt"):
            out = await call(client, "export_session", {"sessionId": sid, "format": fmt})
            assert out["format"] == fmt and out["session_id"] == sid
            exported[fmt] = out["content"]
        assert json.loads(exported["json"])["lines"][1]["speaker_name"] == "Bob"
        assert "**[00:00] Alice:** hello everyone" in exported["markdown"]
        assert exported["srt"].startswith("1\n00:00:00,000 --> 00:00:01,500\nAlice: hello everyone\n\n2\n"
                                          "00:00:02,000 --> 00:00:03,500\nBob: hi Alice, <ready>?\n")
        assert "3\n00:00:06,000 --> 00:00:07,500\nAlice: let us start" in exported["srt"]
        assert exported["vtt"].startswith("WEBVTT\n")
        assert "00:00:02.000 --> 00:00:03.500\n<v Bob>Bob: hi Alice, &lt;ready&gt;?</v>" in exported["vtt"]
        assert (await call(client, "export_session", {"sessionId": sid}))["format"] == "json"  # the default

        left = await call(client, "leave_voice_channel")
        assert left["session"]["id"] == sid and left["session"]["status"] == "ended"
        assert left["voice"]["left"] is True and pipeline.flushed == [sid]
        voice.speak("u1", "Alice", "after the end")  # the sink drops audio once the session is closed
        assert len(pipeline.fed) == 4

        sessions = (await call(client, "list_sessions"))["sessions"]
        assert [(s["id"], s["status"], s["line_count"]) for s in sessions] == [(sid, "ended", 4)]
        assert {s["speaker_name"] for s in sessions[0]["speakers"]} == {"Alice", "Bob"}
        assert (await call(client, "get_bot_status"))["session"] is None

        # leaving again: not in a channel and no session -> the adapter's message as a tool error
        again = await client.call_tool("leave_voice_channel", {})
        assert again.is_error and "not in a voice channel" in again.content[0].text


async def test_specific_channel_follow_and_voice_errors(parts):
    store, pipeline, voice, harness = parts
    async with Client(build_app(store, pipeline, voice, harness)) as client:
        first = await call(client, "join_specific_channel", {"guildId": "11", "channelId": "22"})
        assert (first["guild_id"], first["channel_id"], first["channel_name"]) == ("11", "22", "Voice 22")
        # joining elsewhere ends the open session and starts a new one
        second = await call(client, "join_specific_channel", {"guildId": "11", "channelId": "33"})
        assert second["previous_session_id"] == first["session_id"]
        assert store.get_session(first["session_id"])["status"] == "ended"
        assert store.get_session(second["session_id"])["status"] == "active"

        bad = await client.call_tool("join_specific_channel", {"guildId": "404", "channelId": "1"})
        assert bad.is_error and "guild 404 not found (is the bot in that server?)" in bad.content[0].text
        assert store.get_session(second["session_id"])["status"] == "active"  # a failed join changes nothing

        assert await call(client, "follow_me", {"enabled": True}) == {"follow": True}
        assert voice.follow is True
        missing = await client.call_tool("join_specific_channel", {"guildId": "1"})
        assert missing.is_error and "channelId" in missing.content[0].text


async def test_unknown_sessions_and_bad_formats(parts):
    store, pipeline, voice, harness = parts
    sid = store.start_session("1", "G", "2", "C", {})
    async with Client(build_app(store, pipeline, voice, harness)) as client:
        for tool, args in (("get_transcript", {"sessionId": "nope"}),
                           ("export_session", {"sessionId": "nope", "format": "srt"})):
            result = await client.call_tool(tool, args)
            assert result.is_error and "unknown session: 'nope'" in result.content[0].text
        bad = await client.call_tool("export_session", {"sessionId": sid, "format": "docx"})
        assert bad.is_error and "json, markdown, srt, vtt" in bad.content[0].text
        empty = await client.call_tool("search_transcripts", {"query": "  "})
        assert empty.is_error and "empty" in empty.content[0].text


async def test_search_tool(parts):
    store, pipeline, voice, harness = parts
    async with Client(build_app(store, pipeline, voice, harness)) as client:
        sid = (await call(client, "join_my_voice_channel"))["session_id"]
        voice.speak("u1", "Alice", "the deploy is broken again")
        voice.speak("u2", "Bob", "I will fix the deploy tomorrow")
        voice.speak("u2", "Bob", "lunch?")
        found = await call(client, "search_transcripts", {"query": "deploy"})
        assert found["search_engine"] == store.search_engine
        assert {(h["speaker_name"], h["session_id"], h["channel_name"]) for h in found["hits"]} == {
            ("Alice", sid, "General"), ("Bob", sid, "General")}
        assert (await call(client, "search_transcripts", {"query": "deploy broken"}))["hits"][0]["speaker_name"] == "Alice"
        assert (await call(client, "search_transcripts", {"query": "dinner"}))["hits"] == []


async def test_resources_read(parts):
    store, pipeline, voice, harness = parts
    async with Client(build_app(store, pipeline, voice, harness)) as client:
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["transcript://{sessionId}"]
        assert "sessions://list" in {str(r.uri) for r in (await client.list_resources()).resources}
        sid = (await call(client, "join_my_voice_channel"))["session_id"]
        voice.speak("u1", "Alice", "first words")
        text = (await client.read_resource(transcript_uri(sid))).contents[0]
        assert text.mime_type == "text/plain" and "[00:00] Alice: first words" in text.text
        listed = (await client.read_resource("sessions://list")).contents[0]
        assert json.loads(listed.text)["sessions"][0]["id"] == sid
        with pytest.raises(MCPError, match="unknown session"):
            await client.read_resource("transcript://nope")


async def test_live_update_on_a_listen_stream(parts):
    """2026-07-28: subscriptions/listen; lines committed on other threads reach the subscriber."""
    store, pipeline, voice, harness = parts
    async with Client(build_app(store, pipeline, voice, harness)) as client:
        assert client.protocol_version == "2026-07-28"
        sid = (await call(client, "join_my_voice_channel"))["session_id"]
        uri = transcript_uri(sid)
        async with client.listen(resource_subscriptions=[uri]) as sub:
            voice.speak("u1", "Alice", "are you there?")  # from a worker-like thread
            with anyio.fail_after(5):
                event = await sub.__anext__()
            assert event.uri == uri
        assert "are you there?" in (await client.read_resource(uri)).contents[0].text


async def test_live_update_with_resources_subscribe(parts):
    """2025-era: resources/subscribe, then notifications/resources/updated on the connection."""
    store, pipeline, voice, harness = parts
    received: list[str] = []
    got = anyio.Event()

    async def on_message(message):
        if isinstance(message, mt.ResourceUpdatedNotification):
            received.append(str(message.params.uri))
            got.set()

    app = build_app(store, pipeline, voice, harness)
    async with Client(app, mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.resources.subscribe is True
        sid = (await call(client, "join_my_voice_channel"))["session_id"]
        uri = transcript_uri(sid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await client.subscribe_resource(uri)
            assert app.dvm_state.updates.legacy_subscriber_count(uri) == 1
            voice.speak("u1", "Alice", "ping")
            with anyio.fail_after(5):
                await got.wait()
            assert received == [uri]
            await client.unsubscribe_resource(uri)
            assert app.dvm_state.updates.legacy_subscriber_count(uri) == 0
            await client.subscribe_resource("sessions://list")
            received.clear()
            got = anyio.Event()
            await call(client, "leave_voice_channel")  # the session list changed
            with anyio.fail_after(5):
                await got.wait()
            assert received == ["sessions://list"]
    # a closed connection leaves no subscriber behind
    assert app.dvm_state.updates.legacy_subscriber_count("sessions://list") == 0


async def test_the_pipelines_on_line_is_chained_not_replaced(store):
    seen = []
    pipeline = FakePipeline(store, on_line=seen.append)
    app = build_app(store, pipeline, FakeVoice())
    sid = store.start_session("1", "G", "2", "C", {})
    pipeline.feed(sid, "u1", "Alice", b"hi")  # no event loop bound yet: nothing to notify, nothing breaks
    assert [x.text for x in seen] == ["hi"] and callable(app.dvm_notify_line)


# ---------------------------------------------------------------------------- real transports

SERVER = textwrap.dedent("""
    import sys
    from tests.server.conftest import FakePipeline, FakeVoice
    from dvm.server.app import build_app, run
    from dvm.server.store import Store

    store = Store(sys.argv[1])
    app = build_app(store, FakePipeline(store), FakeVoice(), {"hardware_profile": {"platform_id": "test"}})
    if sys.argv[2] == "stdio":
        run(app)
    else:
        run(app, transport="http", port=int(sys.argv[3]), token=sys.argv[4] or None, log_level="warning")
""")


def _env() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "DVM_HOME": os.environ.get("DVM_HOME", "")}


async def test_stdio_round_trip(tmp_path):
    params = StdioServerParameters(command=sys.executable, args=["-c", SERVER, str(tmp_path / "t.db"), "stdio"],
                                   env=_env(), cwd=str(ROOT))
    with anyio.fail_after(60):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert set(PARAMS) == names
            status = await call(client, "get_bot_status")
            assert status["discord"]["configured"] is True and status["session"] is None
            joined = await call(client, "join_my_voice_channel")
            assert joined["guild_name"] == "Guild One"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start listening")


def _headers(url: str, method: str, headers: dict[str, str]) -> dict[str, str]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(response.headers)
    except urllib.error.HTTPError as exc:
        return dict(exc.headers)


def _post(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_streamable_http_with_bearer_token(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path / "t.db"), "http", str(port), "s3cret"],
                            cwd=ROOT, env={**os.environ, **_env()}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        await anyio.to_thread.run_sync(_wait_for_port, port, proc)
        assert await anyio.to_thread.run_sync(_post, url, {}) == 401
        assert await anyio.to_thread.run_sync(_post, url, {"Authorization": "Bearer wrong"}) == 401
        # DNS-rebinding protection stays on: a foreign Host header is refused even with the token
        bad_host = await anyio.to_thread.run_sync(_post, url, {"Authorization": "Bearer s3cret", "Host": "evil.example"})
        assert bad_host in (403, 421)
        # a page in a browser on another site (DNS rebinding, CSRF): a foreign Origin is refused too
        bad_origin = await anyio.to_thread.run_sync(_post, url, {"Authorization": "Bearer s3cret", "Origin": "http://evil.example"})
        assert bad_origin in (403, 421)
        # no CORS unless asked: a preflight from another origin gets no Access-Control-Allow-* header
        cors = await anyio.to_thread.run_sync(_headers, url, "OPTIONS", {"Origin": "http://evil.example",
                                                                         "Access-Control-Request-Method": "POST"})
        assert not any(k.lower().startswith("access-control-allow") for k in cors)
        # every other path: nothing served without the token (a redirect to /mcp, which then asks for it)
        for path in ("/", "/mcp/", "/sse", "/messages/", "/.well-known/oauth-authorization-server"):
            status = await anyio.to_thread.run_sync(_post, f"http://127.0.0.1:{port}{path}", {})
            assert status in (307, 308, 401, 403, 404, 405, 421), (path, status)
        with anyio.fail_after(30):
            http = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}, timeout=30)
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                assert {t.name for t in (await client.list_tools()).tools} == set(PARAMS)
                status = await call(client, "get_bot_status")
                assert status["discord"]["configured"] is True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_http_app_refuses_unsafe_binds(store):
    app = build_app(store, FakePipeline(store), None)
    with pytest.raises(ValueError, match="needs a token"):
        http_app(app, host="0.0.0.0")
    with pytest.raises(ValueError, match="allowed Host headers"):
        http_app(app, host="0.0.0.0", token="t")
    assert http_app(app, host="0.0.0.0", token="t", allowed_hosts=["box.lan:8000"]) is not None
    assert http_app(app, host="127.0.0.1") is not None


async def test_sessions_follow_the_bot_when_it_moves_or_leaves_by_itself(parts):
    """Follow mode: the adapter reports joins/moves/leaves from its own thread; sessions follow."""
    import threading

    store, pipeline, voice, harness = parts
    voice.on_event = None
    app = build_app(store, pipeline, voice, harness)
    assert callable(voice.on_event)
    async with Client(app) as client:
        first = await call(client, "join_my_voice_channel")
        moved = {"event": "moved", "guild_id": "1001", "guild_name": "Guild One", "channel_id": "2002", "channel_name": "Other"}
        threading.Thread(target=voice.on_event, args=(moved,)).start()
        with anyio.fail_after(5):
            while store.get_session(first["session_id"])["ended_at"] is None:
                await anyio.sleep(0.02)
        status = await call(client, "get_bot_status")
        second = status["session"]["id"]
        assert second != first["session_id"] and status["session"]["channel_name"] == "Other"
        threading.Thread(target=voice.on_event, args=({"event": "left", "reason": "followed user left voice"},)).start()
        with anyio.fail_after(5):
            while store.get_session(second)["ended_at"] is None:
                await anyio.sleep(0.02)
        assert (await call(client, "get_bot_status"))["session"] is None
