"""The sessions store (real SQLite files) and the transcript exports."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dvm.server import exports
from dvm.server.store import SessionNotFoundError, Store, fts5_available

from dvm.server.pipeline import Line as FakeLine

ROOT = Path(__file__).resolve().parents[2]


def line(session_id, text, start=0.0, speaker=("u1", "Alice"), status="ok", end=None):
    return FakeLine(session_id, speaker[0], speaker[1], start, start + 1.5 if end is None else end, text,
                    "whispercpp/tiny.en/q8_0", 0.3, status)


def test_sessions_and_lines_round_trip(store):
    sid = store.start_session("1", "Guild", "2", "General", {"engine": "whispercpp", "threads": 2})
    ids = [store.add_line(line(sid, "hello there", 0.0)),
           store.add_line(line(sid, "hi Alice", 1.0, speaker=("u2", "Bob"))),
           store.add_line(line(sid, "", 3.0, status="dropped"))]
    assert ids == sorted(ids)

    session = store.get_session(sid)
    assert session["status"] == "active" and session["ended_at"] is None
    assert session["line_count"] == 3 and session["speech_end_s"] == 4.5
    assert [(s["speaker_name"], s["lines"]) for s in session["speakers"]] == [("Alice", 2), ("Bob", 1)]
    assert session["engine"] == {"engine": "whispercpp", "threads": 2}
    assert session["guild_name"] == "Guild" and session["channel_id"] == "2"

    lines = store.get_lines(sid)
    assert [ln["text"] for ln in lines] == ["hello there", "hi Alice", ""]
    assert lines[2]["status"] == "dropped" and lines[0]["latency_s"] == 0.3
    assert [ln["id"] for ln in store.get_lines(sid, since_id=ids[0])] == ids[1:]

    ended = store.end_session(sid)
    assert ended["status"] == "ended" and ended["ended_at"] is not None and ended["duration_s"] >= 0
    assert store.end_session(sid)["ended_at"] == ended["ended_at"]  # idempotent
    store.add_line(line(sid, "late line from the queue", 5.0))  # allowed after the end
    assert store.get_session(sid)["line_count"] == 4


def test_list_sessions_newest_first_with_counts(store):
    a = store.start_session("1", "G", "2", "A", {})
    store.add_line(line(a, "one"))
    time.sleep(0.01)
    b = store.start_session("1", "G", "3", "B", {})
    listed = store.list_sessions()
    assert [s["id"] for s in listed] == [b, a]
    assert [s["line_count"] for s in listed] == [0, 1]
    assert listed[1]["speakers"][0]["speaker_name"] == "Alice"


def test_unknown_session_is_a_clear_key_error(store):
    for call in (lambda: store.get_session("nope"), lambda: store.get_lines("nope"),
                 lambda: store.end_session("nope"), lambda: store.add_line(line("nope", "x"))):
        with pytest.raises(KeyError) as info:
            call()
        assert isinstance(info.value, SessionNotFoundError)
        assert str(info.value).startswith("unknown session: 'nope'")


def test_wal_mode_and_file_location(tmp_path, monkeypatch):
    monkeypatch.setenv("DVM_HOME", str(tmp_path / "home"))
    with Store() as s:
        assert s.path == tmp_path / "home" / "transcripts.db"
        s.start_session("1", "G", "2", "C", {})
    conn = sqlite3.connect(tmp_path / "home" / "transcripts.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like"])
def test_search(tmp_path, fts):
    if fts and not fts5_available():
        pytest.skip("this SQLite has no FTS5")
    with Store(tmp_path / "t.db", fts=fts) as s:
        assert s.search_engine == ("fts5" if fts else "like")
        a = s.start_session("1", "Guild", "2", "General", {})
        b = s.start_session("1", "Guild", "3", "Music", {})
        s.add_line(line(a, "Ask not what your country can do for you"))
        s.add_line(line(a, "the weather is nice today"))
        s.add_line(line(b, "my COUNTRY road, take me home", speaker=("u2", "Bob")))
        s.add_line(line(b, "100% sure_thing"))
        hits = s.search("country")
        assert {h["text"] for h in hits} == {"Ask not what your country can do for you", "my COUNTRY road, take me home"}
        assert {h["channel_name"] for h in hits} == {"General", "Music"}
        assert all(h["session_started_at"] for h in hits)
        assert [h["text"] for h in s.search("country   HOME")] == ["my COUNTRY road, take me home"]
        assert s.search("weather nice")[0]["session_id"] == a
        assert s.search("zebra") == [] and s.search("   ") == [] and s.search('"*') == []
        assert len(s.search("country", limit=1)) == 1
        assert s.search("sure_thing")[0]["text"] == "100% sure_thing"  # no LIKE wildcards leak through
        assert s.search('country" OR "weather') == []  # no operators: "OR" is just a word that must occur
        assert s.search('NOT country')[0]["text"].startswith("Ask not")


def test_fts_index_is_built_for_lines_written_without_it(tmp_path):
    if not fts5_available():
        pytest.skip("this SQLite has no FTS5")
    with Store(tmp_path / "t.db", fts=False) as s:
        sid = s.start_session("1", "G", "2", "C", {})
        s.add_line(line(sid, "written before the index existed"))
    with Store(tmp_path / "t.db") as s:
        assert s.search_engine == "fts5"
        assert [h["text"] for h in s.search("before index")] == ["written before the index existed"]


def test_concurrent_writers_and_readers(store):
    sid = store.start_session("1", "G", "2", "C", {})
    errors = []

    def write(worker):
        try:
            for i in range(50):
                store.add_line(line(sid, f"worker {worker} line {i}", float(i), speaker=(f"u{worker}", f"W{worker}")))
        except Exception as exc:  # noqa: BLE001 - collected and asserted empty below
            errors.append(exc)

    def read():
        try:
            for _ in range(30):
                store.list_sessions()
                store.get_lines(sid)
                store.search("worker")
        except Exception as exc:  # noqa: BLE001 - collected and asserted empty below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_session(sid)["line_count"] == 200
    assert len({ln["id"] for ln in store.get_lines(sid)}) == 200


def test_open_sessions_of_dead_processes_become_interrupted(tmp_path):
    path = tmp_path / "t.db"
    with Store(path) as s:
        dead = s.start_session("1", "G", "2", "Dead", {})
        alive = s.start_session("1", "G", "3", "Alive", {})
        mine = s.start_session("1", "G", "4", "Mine", {})
        s.add_line(line(dead, "kept"))
        s.conn.execute("UPDATE sessions SET owner_pid=? WHERE id=?", (_dead_pid(), dead))
        s.conn.execute("UPDATE sessions SET owner_pid=? WHERE id=?", (os.getppid(), alive))
    with Store(path) as s:
        assert s.interrupted == [dead]
        assert s.get_session(dead)["status"] == "interrupted"
        assert s.get_session(dead)["ended_at"] is not None
        assert [ln["text"] for ln in s.get_lines(dead)] == ["kept"]
        assert s.get_session(alive)["status"] == "active"  # another live server's session
        assert s.get_session(mine)["status"] == "active"  # this process's own session


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


CRASHER = textwrap.dedent("""
    import sys, time
    from dvm.server.store import Store
    store = Store(sys.argv[1])
    sid = store.start_session("1", "Guild", "2", "General", {"engine": "fake"})
    print("session", sid, flush=True)
    i = 0
    while True:
        n = store.add_line({"session_id": sid, "speaker_id": "u1", "speaker_name": "Alice", "start": float(i),
                            "end": i + 0.5, "text": f"line {i}", "engine": "fake", "latency_s": 0.1})
        print("committed", n, flush=True)
        i += 1
        time.sleep(0.002)
""")


def test_lines_survive_sigkill_and_the_session_is_interrupted(tmp_path):
    path = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    committed: list[int] = []
    session_id = None
    try:
        deadline = time.monotonic() + 30
        for out in proc.stdout:
            kind, value = out.split()
            if kind == "session":
                session_id = value
            else:
                committed.append(int(value))
            if len(committed) >= 40 or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-session, mid-write
        rest = proc.stdout.read()  # ids printed before the kill landed were committed too
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    committed += [int(x.split()[1]) for x in rest.splitlines() if x.startswith("committed ")]
    assert proc.returncode == -signal.SIGKILL
    assert session_id and len(committed) >= 40

    with Store(path) as s:
        assert s.interrupted == [session_id]
        stored = {ln["id"] for ln in s.get_lines(session_id)}
        assert set(committed) <= stored
        listed = {x["id"]: x for x in s.list_sessions()}
        assert listed[session_id]["status"] == "interrupted"
        assert listed[session_id]["line_count"] == len(stored)


# ---------------------------------------------------------------------------- exports


def _sample(store):
    sid = store.start_session("1", "Guild", "2", "General", {"engine": "whispercpp", "model": "tiny.en"})
    store.add_line(line(sid, "second, said by Bob", 2.25, speaker=("u2", "Bob"), end=3.5))  # committed first
    store.add_line(line(sid, "first <words> & more", 0.5, end=2.0))
    store.add_line(line(sid, "", 4.0, status="dropped"))
    store.add_line(line(sid, "an hour in", 3725.125, end=3727.0))
    return store.get_session(sid), store.get_lines(sid)


def test_clock_formats():
    assert exports.clock(0) == "00:00:00.000"
    assert exports.clock(3725.1254, ",") == "01:02:05,125"
    assert exports.short_clock(65.9) == "01:05" and exports.short_clock(3725) == "1:02:05"


def test_srt(store):
    session, lines = _sample(store)
    srt = exports.export(session, lines, "srt")[2]
    assert srt == ("1\n00:00:00,500 --> 00:00:02,000\nAlice: first <words> & more\n\n"
                   "2\n00:00:02,250 --> 00:00:03,500\nBob: second, said by Bob\n\n"
                   "3\n01:02:05,125 --> 01:02:07,000\nAlice: an hour in\n")


def test_vtt(store):
    session, lines = _sample(store)
    fmt, mime, vtt = exports.export(session, lines, "webvtt")
    assert (fmt, mime) == ("vtt", "text/vtt")
    assert vtt.startswith("WEBVTT\n\nNOTE\nTranscript: Guild / #General\n\n")
    assert "00:00:00.500 --> 00:00:02.000\n<v Alice>Alice: first &lt;words&gt; &amp; more</v>\n" in vtt
    assert "01:02:05.125 --> 01:02:07.000\n<v Alice>Alice: an hour in</v>\n" in vtt
    assert vtt.index("first") < vtt.index("second") and "dropped" not in vtt


def test_markdown_text_and_json(store):
    session, lines = _sample(store)
    md = exports.export(session, lines, "md")[2]
    assert md.startswith("# Transcript: Guild / \\#General\n")
    assert "**[00:00] Alice:** first \\<words\\> & more" in md
    assert "**[00:04] Alice:** _\\[not transcribed: dropped\\]_" in md
    assert "- **Speakers:** Bob, Alice" in md
    text = exports.to_text(session, lines)
    assert "[00:02] Bob: second, said by Bob\n" in text and "[1:02:05] Alice: an hour in" in text
    data = json.loads(exports.export(session, lines, "json")[2])
    assert data["session"]["id"] == session["id"]
    assert [ln["start"] for ln in data["lines"]] == [0.5, 2.25, 4.0, 3725.125]
    with pytest.raises(ValueError, match="json, markdown, srt, vtt"):
        exports.export(session, lines, "docx")


def test_a_corrupt_or_locked_database_is_one_clear_error(tmp_path):
    from dvm.errors import DvmError
    from dvm.server.store import StoreOpenError

    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(StoreOpenError, match="corrupt or not SQLite") as info:
        Store(bad)
    assert isinstance(info.value, DvmError) and "\n" not in str(info.value)
    good = tmp_path / "locked.db"
    Store(good).close()
    holder = sqlite3.connect(good, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write, for longer than the busy timeout
    try:
        with pytest.raises(StoreOpenError, match="another process holds it"):
            Store(good, busy_timeout_s=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_disk_full_during_a_commit_loses_nothing_committed_and_serving_goes_on(tmp_path):
    """SQLite's own 'database or disk is full' (max_page_count pinned at the current size), through the
    pipeline's commit path: counted and reported, earlier lines intact, the next line after space returns."""
    from dvm.server.config import Settings
    from dvm.server.pipeline import Pipeline, Utterance

    store = Store(tmp_path / "full.db")
    sid = store.start_session("g", "G", "c", "C")
    pipeline = Pipeline(lambda: None, store, Settings(live=False))
    seen = []
    pipeline.on_line = seen.append

    def commit(seq, text):
        utterance = Utterance(sid, "u", "Ann", seq, float(seq), float(seq) + 1, 0.0, None)
        pipeline._commit_text(utterance, text)

    commit(0, "kept before the disk filled")
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count={pages}")
    for seq in range(1, 40):  # fill the last pages, then fail
        commit(seq, "x" * 2000)
    stats = pipeline.stats()
    assert stats["store_failed"] > 0 and "full" in stats["last_store_error"]
    assert len(seen) == 40  # every line still reached the live listeners
    store.conn.execute("PRAGMA max_page_count=1073741823")
    commit(40, "after space came back")
    texts = [line["text"] for line in store.get_lines(sid)]
    assert texts[0] == "kept before the disk filled" and texts[-1] == "after space came back"
    store.close()
    reopened = Store(tmp_path / "full.db")
    assert reopened.get_lines(sid)[0]["text"] == "kept before the disk filled"
    reopened.close()
