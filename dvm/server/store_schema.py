"""The transcript store's SQLite schema: sessions, lines, and the optional FTS5 index kept in step by
triggers (see dvm.server.store)."""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT PRIMARY KEY,
    guild_id     TEXT,
    guild_name   TEXT,
    channel_id   TEXT,
    channel_name TEXT,
    started_at   REAL NOT NULL,
    ended_at     REAL,
    status       TEXT NOT NULL DEFAULT 'active',
    engine       TEXT NOT NULL DEFAULT '{}',
    owner_host   TEXT,
    owner_pid    INTEGER
);
CREATE TABLE IF NOT EXISTS lines (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id   TEXT NOT NULL REFERENCES sessions(id),
    speaker_id   TEXT NOT NULL,
    speaker_name TEXT NOT NULL,
    start        REAL NOT NULL,
    "end"        REAL NOT NULL,
    text         TEXT NOT NULL DEFAULT '',
    engine       TEXT NOT NULL DEFAULT '',
    latency_s    REAL,
    status       TEXT NOT NULL DEFAULT 'ok',
    created_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_by_session ON lines(session_id, id);
"""

FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS lines_fts USING fts5(text, content='lines', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS lines_fts_insert AFTER INSERT ON lines BEGIN
    INSERT INTO lines_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS lines_fts_delete AFTER DELETE ON lines BEGIN
    INSERT INTO lines_fts(lines_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS lines_fts_update AFTER UPDATE OF text ON lines BEGIN
    INSERT INTO lines_fts(lines_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO lines_fts(rowid, text) VALUES (new.id, new.text);
END;
"""

LINE_COLUMNS = 'id, session_id, speaker_id, speaker_name, start, "end", text, engine, latency_s, status, created_at'
