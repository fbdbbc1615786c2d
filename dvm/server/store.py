"""The sessions store: one SQLite file (WAL) holding voice sessions and their transcribed lines.

A line is durable as soon as :meth:`Store.add_line` returns: every write is its own committed
transaction, and WAL with ``synchronous=NORMAL`` keeps committed transactions across a process
crash. One connection, guarded by a lock, serves every thread (the pipeline's workers write,
the MCP app reads); statements are short, so the lock is never held for long.

Sessions that were still open when their process died are marked ``interrupted`` the next time
the store is opened (their lines are kept). A session whose owning process is still alive (another
``dvm serve`` on the same file) is left alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dvm import paths
from dvm.errors import DvmError, shown
from dvm.server.store_schema import FTS_SCHEMA, LINE_COLUMNS, SCHEMA, SCHEMA_VERSION


class StoreOpenError(DvmError):
    """The transcript database cannot be opened: corrupt, not SQLite, locked by another process, unreadable."""

    def __init__(self, path: Path, exc: sqlite3.DatabaseError):
        reason = str(exc)
        if "not a database" in reason or "malformed" in reason:
            hint = "the file is corrupt or not SQLite: move it aside (a new store is created) or set DVM_HOME"
        elif "locked" in reason or "busy" in reason:
            hint = "another process holds it (another `dvm serve` on the same DVM_HOME?)"
        else:
            hint = "check the file and its folder are readable and writable"
        super().__init__(f"{path}: cannot open the transcript store ({reason}); {hint}")


class SessionNotFoundError(DvmError, KeyError):
    """No session with that id. A ``KeyError`` whose ``str()`` is a readable sentence."""

    def __init__(self, session_id: str):
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"unknown session: {shown(self.session_id)} (list_sessions shows the known ones)"


def default_path() -> Path:
    return paths.dvm_home() / "transcripts.db"


def fts5_available() -> bool:
    """Whether this Python's SQLite was built with FTS5."""
    try:
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
        finally:
            conn.close()
        return True
    except sqlite3.Error:
        return False


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds (``2026-11-24T17:40:00.123Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _line_values(line: Any) -> dict:
    """Accept the pipeline's ``Line`` dataclass, any object with those attributes, or a dict."""
    if isinstance(line, dict):
        data = line
    elif dataclasses.is_dataclass(line):
        data = dataclasses.asdict(line)
    else:
        data = {k: getattr(line, k) for k in ("session_id", "speaker_id", "speaker_name", "start", "end",
                                              "text", "engine", "latency_s", "status") if hasattr(line, k)}
    try:
        return {
            "session_id": str(data["session_id"]),
            "speaker_id": str(data["speaker_id"]),
            "speaker_name": str(data.get("speaker_name") or data["speaker_id"]),
            "start": float(data["start"]),
            "end": float(data["end"]),
            "text": str(data.get("text") or ""),
            "engine": str(data.get("engine") or ""),
            "latency_s": None if data.get("latency_s") is None else float(data["latency_s"]),
            "status": str(data.get("status") or "ok"),
        }
    except KeyError as exc:
        raise ValueError(f"a transcript line needs {exc.args[0]!r}") from None


class Store:
    """Sessions and transcript lines in one SQLite file. Safe to share between threads."""

    def __init__(self, path: str | os.PathLike | None = None, *, fts: bool | None = None, busy_timeout_s: float = 10.0):
        """Open (creating if needed) the store at ``path`` (default ``DVM_HOME/transcripts.db``).

        ``fts``: use SQLite FTS5 for search; ``None`` = when available, ``False`` = plain LIKE.
        A file that is not a database, or one another process keeps locked past ``busy_timeout_s``, is a
        ``StoreOpenError`` (one line saying what to do), not a traceback.
        """
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
            self._open(fts, busy_timeout_s)
        except sqlite3.DatabaseError as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise StoreOpenError(self.path, exc) from None

    def _open(self, fts: bool | None, busy_timeout_s: float) -> None:
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            c = self._conn
            c.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA foreign_keys=ON")
            c.executescript(SCHEMA)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            has_fts_table = c.execute(
                "SELECT 1 FROM sqlite_master WHERE name='lines_fts'").fetchone() is not None
            want_fts = fts5_available() if fts is None else bool(fts)
            if want_fts and not has_fts_table:
                try:
                    c.executescript(FTS_SCHEMA)
                    c.execute("INSERT INTO lines_fts(lines_fts) VALUES ('rebuild')")
                    has_fts_table = True
                except sqlite3.OperationalError:
                    want_fts = False
            # An index built by an earlier open keeps being maintained by its triggers either way.
            self.search_engine = "fts5" if (want_fts and has_fts_table) else "like"
            self.interrupted = self._mark_interrupted()

    # ------------------------------------------------------------------ plumbing

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the transcript store is closed")
        return self._conn

    def _query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _mark_interrupted(self) -> list[str]:
        """Sessions left open by a process that is gone: mark them interrupted, keep their lines."""
        me = socket.gethostname()
        rows = self.conn.execute(
            "SELECT id, owner_host, owner_pid, started_at FROM sessions WHERE ended_at IS NULL").fetchall()
        marked = []
        for row in rows:
            if row["owner_host"] == me and row["owner_pid"] == os.getpid():
                continue
            if row["owner_host"] == me and row["owner_pid"] and _pid_alive(row["owner_pid"]):
                continue
            # A session on another host is judged dead too: its owner cannot be checked from here.
            last = self.conn.execute("SELECT MAX(created_at) FROM lines WHERE session_id=?", (row["id"],)).fetchone()[0]
            self.conn.execute("UPDATE sessions SET ended_at=?, status='interrupted' WHERE id=? AND ended_at IS NULL",
                              (last if last is not None else row["started_at"], row["id"]))
            marked.append(row["id"])
        return marked

    def end_own_sessions(self) -> list[str]:
        """End every session this process still has open (a clean shutdown); returns their ids."""
        with self._lock:
            rows = self.conn.execute("SELECT id FROM sessions WHERE ended_at IS NULL AND owner_host=? AND owner_pid=?",
                                     (socket.gethostname(), os.getpid())).fetchall()
            for row in rows:
                self.end_session(row["id"])
        return [row["id"] for row in rows]

    # ------------------------------------------------------------------ writes

    def start_session(self, guild_id: str | None, guild_name: str | None, channel_id: str | None,
                      channel_name: str | None, engine: dict | None = None) -> str:
        """Open a session; returns its id (a UUID string)."""
        session_id = str(uuid.uuid4())
        with self._lock:
            self.conn.execute(
                "INSERT INTO sessions (id, guild_id, guild_name, channel_id, channel_name, started_at, status,"
                " engine, owner_host, owner_pid) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                (session_id, _opt_str(guild_id), guild_name, _opt_str(channel_id), channel_name, time.time(),
                 json.dumps(engine or {}, default=str), socket.gethostname(), os.getpid()))
        return session_id

    def end_session(self, session_id: str) -> dict:
        """Close a session (idempotent: ending an ended session changes nothing). Returns its summary."""
        with self._lock:
            cur = self.conn.execute("UPDATE sessions SET ended_at=?, status='ended' WHERE id=? AND ended_at IS NULL",
                                    (time.time(), session_id))
            if cur.rowcount == 0:
                self._require(session_id)
            return self.get_session(session_id)

    def add_line(self, line: Any) -> int:
        """Append one transcribed utterance (a ``pipeline.Line`` or a dict); committed before returning.

        Lines may arrive after their session ended (utterances still in the transcription queue).
        """
        v = _line_values(line)
        with self._lock:
            try:
                cur = self.conn.execute(
                    'INSERT INTO lines (session_id, speaker_id, speaker_name, start, "end", text, engine,'
                    " latency_s, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (v["session_id"], v["speaker_id"], v["speaker_name"], v["start"], v["end"], v["text"],
                     v["engine"], v["latency_s"], v["status"], time.time()))
            except sqlite3.IntegrityError:
                raise SessionNotFoundError(v["session_id"]) from None
            return int(cur.lastrowid)

    # ------------------------------------------------------------------ reads

    def _require(self, session_id: str) -> sqlite3.Row:
        rows = self._query("SELECT * FROM sessions WHERE id=?", (session_id,))
        if not rows:
            raise SessionNotFoundError(session_id)
        return rows[0]

    def _summaries(self, where: str = "", params: tuple = ()) -> list[dict]:
        with self._lock:
            sessions = self.conn.execute(
                'SELECT s.*, COUNT(l.id) AS line_count, MAX(l."end") AS last_end, MAX(l.created_at) AS last_line_at'
                f" FROM sessions s LEFT JOIN lines l ON l.session_id = s.id {where}"
                " GROUP BY s.id ORDER BY s.started_at DESC, s.rowid DESC", params).fetchall()
            speakers = self.conn.execute(
                "SELECT session_id, speaker_id, speaker_name, COUNT(*) AS lines FROM lines"
                + (" WHERE session_id=?" if where else "")
                + " GROUP BY session_id, speaker_id ORDER BY MIN(id)", params).fetchall()
        by_session: dict[str, list[dict]] = {}
        for sp in speakers:
            by_session.setdefault(sp["session_id"], []).append(
                {"speaker_id": sp["speaker_id"], "speaker_name": sp["speaker_name"], "lines": sp["lines"]})
        now = time.time()
        out = []
        for s in sessions:
            end = s["ended_at"] if s["ended_at"] is not None else now
            out.append({
                "id": s["id"],
                "guild_id": s["guild_id"], "guild_name": s["guild_name"],
                "channel_id": s["channel_id"], "channel_name": s["channel_name"],
                "started_at": iso(s["started_at"]), "ended_at": iso(s["ended_at"]),
                "status": s["status"],
                "duration_s": round(max(0.0, end - s["started_at"]), 3),
                "speech_end_s": s["last_end"],
                "line_count": s["line_count"],
                "speakers": by_session.get(s["id"], []),
                "engine": _loads(s["engine"]),
            })
        return out

    def list_sessions(self) -> list[dict]:
        """Every session, newest first, with line counts, speakers and duration."""
        return self._summaries()

    def get_session(self, session_id: str) -> dict:
        found = self._summaries("WHERE s.id=?", (session_id,))
        if not found:
            raise SessionNotFoundError(session_id)
        return found[0]

    def get_lines(self, session_id: str, since_id: int = 0) -> list[dict]:
        """A session's lines in commit order; ``since_id`` returns only lines with a larger id."""
        self._require(session_id)
        rows = self._query(f"SELECT {LINE_COLUMNS} FROM lines WHERE session_id=? AND id>? ORDER BY id",
                           (session_id, int(since_id)))
        return [_line_dict(r) for r in rows]

    def search(self, query: str, limit: int = 50) -> list[dict]:
        """Lines whose text holds every word of ``query`` (case-insensitive), best/newest first.

        Each hit carries its session's guild/channel names. FTS5 when available, else LIKE.
        """
        words = re.findall(r"\w+", query or "")
        if not words:
            return []
        limit = max(1, min(int(limit), 500))
        select = (f"SELECT {', '.join('l.' + c.strip() for c in LINE_COLUMNS.split(','))},"
                  " s.guild_name, s.channel_name, s.started_at AS session_started_at"
                  " FROM lines l JOIN sessions s ON s.id = l.session_id")
        if self.search_engine == "fts5":
            match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            rows = self._query(
                f"{select} JOIN lines_fts f ON f.rowid = l.id WHERE lines_fts MATCH ?"
                " ORDER BY f.rank, l.id DESC LIMIT ?", (match, limit))
        else:
            clause = " AND ".join(["l.text LIKE ? ESCAPE '\\'"] * len(words))
            like = ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for w in words]
            rows = self._query(f"{select} WHERE {clause} ORDER BY l.id DESC LIMIT ?", (*like, limit))
        hits = []
        for r in rows:
            hit = _line_dict(r)
            hit.update(guild_name=r["guild_name"], channel_name=r["channel_name"],
                       session_started_at=iso(r["session_started_at"]))
            hits.append(hit)
        return hits


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _loads(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _line_dict(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"], "session_id": row["session_id"],
        "speaker_id": row["speaker_id"], "speaker_name": row["speaker_name"],
        "start": row["start"], "end": row["end"], "text": row["text"], "engine": row["engine"],
        "latency_s": row["latency_s"], "status": row["status"], "created_at": iso(row["created_at"]),
    }
