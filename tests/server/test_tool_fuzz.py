"""The MCP tool surface under random JSON arguments, through a real MCP client: no call crashes the
server, an error reaches the client as one readable line (never a traceback), and the server keeps
answering. Seeded, so a failure reproduces; DVM_FUZZ_CALLS raises the count for a long run."""

from __future__ import annotations

import os
import random

import pytest
from mcp import Client

from dvm.server.app import build_app
from dvm.server.pipeline import Line

from .conftest import FakePipeline, FakeVoice

pytestmark = pytest.mark.anyio

CALLS = int(os.environ.get("DVM_FUZZ_CALLS", "300"))
FTS_SYNTAX = ['"', "*", ":", "(", ")", "^", "-", "+", "NEAR", "AND", "OR", "NOT", "{", "}", "'", "\\", "%", "_", ";"]


def random_string(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return ""
    if kind == 1:
        return " ".join(rng.choice(FTS_SYNTAX) for _ in range(rng.randrange(1, 12)))
    if kind == 2:
        return "x" * rng.choice([1001, 10_000, 200_000])  # huge
    if kind == 3:
        return " ".join(f"w{i}" for i in range(rng.randrange(30, 200)))  # many words
    if kind == 4:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 40)))  # any unicode
    if kind == 5:
        return rng.choice(["json", "markdown", "srt", "vtt", "pdf", "../../etc/passwd", "JSON", "html"])
    if kind == 6:
        return rng.choice(["hello", "the meeting", "béta", "東京", "hello world"])
    return "00000000-0000-4000-8000-000000000000"


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return random_string(rng)
    if kind == 1:
        return rng.choice([0, -1, 2**63, 3.5, float("1e308")])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return None
    if kind == 4:
        return random_string(rng)
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {random_string(rng)[:20]: random_value(rng, depth + 1) for _ in range(rng.randrange(3))}


def random_arguments(rng: random.Random, schema: dict, session_ids: list[str]) -> dict:
    props = schema.get("properties", {})
    args = {}
    for name in props:
        roll = rng.random()
        if roll < 0.15:
            continue  # a missing (maybe required) argument
        if name == "sessionId" and roll < 0.5 and session_ids:
            args[name] = rng.choice(session_ids)
        else:
            args[name] = random_value(rng)
    if rng.random() < 0.2:
        args[random_string(rng)[:30] or "extra"] = random_value(rng)  # an argument no tool has
    return args


async def test_random_arguments_never_crash_a_tool_or_leak_a_traceback(store, tmp_path):
    session = store.start_session("g", "Guild", "c", "General")
    for i, text in enumerate(["hello world from the meeting", 'a "quoted" word', "béta 東京 test"]):
        store.add_line(Line(session, "u1", "Ann", float(i), float(i) + 1, text, "whispercpp/tiny.en/q8_0", 0.5))
    harness = {"hardware_profile": lambda: {"platform_id": "linux-x86_64-test"}, "results_dirs": [tmp_path / "none"],
               "platform_id": "linux-x86_64-test"}
    rng = random.Random(20261203)
    errors = ok = 0
    async with Client(build_app(store, FakePipeline(store), FakeVoice(), harness)) as client:
        tools = (await client.list_tools()).tools
        for _ in range(CALLS):
            tool = rng.choice(tools)
            args = random_arguments(rng, tool.input_schema, [session])
            result = await client.call_tool(tool.name, args)
            text = " ".join(getattr(c, "text", "") for c in result.content)
            assert "Traceback" not in text and 'File "' not in text, (tool.name, args, text[:500])
            if result.is_error:
                errors += 1
                assert text.strip() and len(text) < 2000, (tool.name, text[:300])  # readable, and no echo of a huge input
            else:
                ok += 1
        assert (await client.call_tool("list_sessions", {})).is_error is False  # still serving
    assert errors and ok  # both paths were exercised


async def test_search_refuses_huge_queries_and_survives_fts_syntax(store):
    session = store.start_session("g", "Guild", "c", "General")
    store.add_line(Line(session, "u1", "Ann", 0.0, 1.0, "near the river AND the bridge", "e", 0.1))
    async with Client(build_app(store, FakePipeline(store), FakeVoice(), {})) as client:
        long = await client.call_tool("search_transcripts", {"query": "x" * 5000})
        assert long.is_error and "too long" in long.content[0].text
        many = await client.call_tool("search_transcripts", {"query": " ".join(["w"] * 40)})
        assert many.is_error and "40 words" in many.content[0].text
        for query in ['"', "NEAR(", "river AND", "-bridge", "river*", "(*)", "^"]:
            result = await client.call_tool("search_transcripts", {"query": query})
            assert not result.is_error, (query, result.content)
        hits = (await client.call_tool("search_transcripts", {"query": 'river" OR "x'})).structured_content["hits"]
        assert [h["text"] for h in hits] == []  # every word must occur: "x" does not
        bad = await client.call_tool("get_transcript", {"sessionId": "s" * 100_000})
        assert bad.is_error and len(bad.content[0].text) < 300
