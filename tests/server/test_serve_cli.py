"""`dvm serve` itself, as a user starts it: real settings, real pipeline and engine, stdio MCP."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

CHOSEN = """
platform_id = "test"
rule = "test"
[engine]
variant = "wheel"
engine = "whispercpp"
model = "tiny.en"
quant = "q8_0"
threads = 1
beam_size = 1
audio_ctx = "fit"
language = "en"
temperature_fallback = false
device = "cpu"
[serving]
workers = 1
threads = 1
"""


async def test_dvm_serve_over_stdio(tmp_path):
    config = tmp_path / "chosen.toml"
    config.write_text(CHOSEN)
    env = {**os.environ, "DVM_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    env.pop("DISCORD_TOKEN", None)
    params = StdioServerParameters(command=sys.executable, args=["-m", "dvm.cli", "serve", "--config", str(config)],
                                   env=env, cwd=str(ROOT))
    with anyio.fail_after(120):
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"join_my_voice_channel", "get_bot_status", "export_session"} <= tools
            status = (await client.call_tool("get_bot_status", {})).structured_content
            pipeline = status["pipeline"]
            assert pipeline["engine"]["quant"] == "q8_0" and pipeline["workers"] == 1
            joined = await client.call_tool("join_my_voice_channel", {})
            assert joined.is_error and "Discord not configured" in joined.content[0].text
            sessions = (await client.call_tool("list_sessions", {})).structured_content
            assert sessions["sessions"] == []


def test_serve_rejects_both_config_flags(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "dvm.cli", "serve", "--config", "x.toml", "--auto-config"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "either --config" in result.stderr


def test_serve_missing_config_is_one_line(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "dvm.cli", "serve", "--config", str(tmp_path / "none.toml")],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DVM_HOME": str(tmp_path)})
    assert result.returncode == 2 and "no such config file" in result.stderr and "Traceback" not in result.stderr


SIGTERM_SCRIPT = """
import sys, time
from pathlib import Path
from dvm.harness.clips import load_clips, read_audio
from dvm.server import config, loadtest
from dvm.server.main import build, shutdown, stop_on_sigterm

settings = config.load(Path(sys.argv[2]))
settings.live = False
store, pipeline, voice = build(settings, Path(sys.argv[1]))
pipeline.start()
sid = store.start_session("g", "G", "c", "C")
pipeline.begin(sid)
stop_on_sigterm()
clip = next(c for c in load_clips() if c.id == "lj001-0005")
try:
    for frame in loadtest.frames(loadtest.to_discord_pcm(read_audio(clip))):
        pipeline.feed(sid, "u1", "Ann", frame)
    print("fed", sid, flush=True)  # the speaker is still mid-utterance: nothing committed yet
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    pass
finally:
    shutdown(store, pipeline, voice)
"""


def test_sigterm_finishes_the_utterance_in_flight_and_ends_the_session(tmp_path):
    import signal
    import subprocess

    from dvm.harness import scoring
    from dvm.harness.clips import load_clips
    from dvm.server.store import Store

    config = tmp_path / "chosen.toml"
    config.write_text(CHOSEN)
    db = tmp_path / "t.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(db), str(config)], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[:1] == ["fed"], proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    store = Store(db)
    session = store.get_session(first[1])
    lines = store.get_lines(first[1])
    store.close()
    assert session["status"] == "ended"
    reference = next(c for c in load_clips() if c.id == "lj001-0005").text
    assert len(lines) == 1 and scoring.score(reference, lines[0]["text"])["wer"] <= 0.2, lines
