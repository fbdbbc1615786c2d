"""A session's transcript as JSON, Markdown, SubRip (SRT), WebVTT or plain text.

Every function takes the store's dicts: ``session`` from ``Store.get_session`` and ``lines`` from
``Store.get_lines``. Lines are shown in speaking order (start time, then commit order). Lines the
pipeline could not transcribe (status ``dropped``/``failed``) appear as a marked gap in text,
Markdown and JSON, and are left out of the subtitle formats.
"""

from __future__ import annotations

import json

from dvm.errors import shown

FORMATS = {
    "json": "application/json",
    "markdown": "text/markdown",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "text": "text/plain",
}
_ALIASES = {"md": "markdown", "webvtt": "vtt", "txt": "text", "subrip": "srt"}


def normalize_format(fmt: str) -> str:
    """The canonical format name, or ValueError naming the choices."""
    key = (fmt or "").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown export format {shown(fmt)}; choose one of: json, markdown, srt, vtt")
    return key


def spoken_order(lines: list[dict]) -> list[dict]:
    return sorted(lines, key=lambda ln: (ln["start"], ln["id"]))


def clock(seconds: float, sep: str = ".") -> str:
    """``HH:MM:SS<sep>mmm`` (SRT uses ',' and WebVTT '.')."""
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def short_clock(seconds: float) -> str:
    """``MM:SS`` or ``H:MM:SS`` for human-facing transcripts."""
    total = max(0, int(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _gap(line: dict) -> str:
    return f"[not transcribed: {line['status']}]"


def _title(session: dict) -> str:
    where = " / ".join(x for x in (session.get("guild_name"), session.get("channel_name") and "#" + session["channel_name"]) if x)
    return f"Transcript: {where}" if where else f"Transcript {session['id']}"


def _header_facts(session: dict) -> list[tuple[str, str]]:
    facts = [("Session", session["id"]), ("Started", session.get("started_at") or "?")]
    if session.get("ended_at"):
        facts.append(("Ended", f"{session['ended_at']} ({session.get('status')})"))
    else:
        facts.append(("Status", str(session.get("status"))))
    speakers = ", ".join(sp["speaker_name"] for sp in session.get("speakers", []))
    if speakers:
        facts.append(("Speakers", speakers))
    engine = session.get("engine") or {}
    if engine:
        facts.append(("Engine", ", ".join(f"{k}={v}" for k, v in engine.items() if not isinstance(v, (dict, list)))))
    return facts


def to_text(session: dict, lines: list[dict], interims: list[dict] | None = None) -> str:
    """The live transcript view: a short header, then ``[MM:SS] Name: text`` per line; utterances
    still in progress follow as ``[MM:SS] Name (interim): text`` (never stored, replaced by the final)."""
    out = [_title(session)]
    out += [f"{k}: {v}" for k, v in _header_facts(session)]
    out.append("")
    for ln in spoken_order(lines):
        text = ln["text"] if ln["status"] == "ok" else _gap(ln)
        out.append(f"[{short_clock(ln['start'])}] {ln['speaker_name']}: {text}")
    for ln in sorted(interims or [], key=lambda i: i["start"]):
        out.append(f"[{short_clock(ln['start'])}] {ln['speaker_name']} (interim): {ln['text']}")
    if not lines and not interims:
        out.append("(no speech transcribed yet)")
    return "\n".join(out) + "\n"


def to_json(session: dict, lines: list[dict]) -> str:
    return json.dumps({"session": session, "lines": spoken_order(lines)}, indent=2, ensure_ascii=False) + "\n"


def _md_escape(text: str) -> str:
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text


def to_markdown(session: dict, lines: list[dict]) -> str:
    out = [f"# {_md_escape(_title(session))}", ""]
    out += [f"- **{k}:** {_md_escape(str(v))}" for k, v in _header_facts(session)]
    out.append("")
    for ln in spoken_order(lines):
        text = _md_escape(ln["text"]) if ln["status"] == "ok" else f"_{_md_escape(_gap(ln))}_"
        out.append(f"**[{short_clock(ln['start'])}] {_md_escape(ln['speaker_name'])}:** {text}")
        out.append("")
    if not lines:
        out += ["_No speech transcribed._", ""]
    return "\n".join(out)


def _cues(lines: list[dict]) -> list[tuple[float, float, dict]]:
    cues = []
    for ln in spoken_order(lines):
        if ln["status"] != "ok" or not ln["text"].strip():
            continue
        start = max(0.0, float(ln["start"]))
        end = max(float(ln["end"]), start + 0.001)
        cues.append((start, end, ln))
    return cues


def to_srt(session: dict, lines: list[dict]) -> str:
    blocks = []
    for i, (start, end, ln) in enumerate(_cues(lines), 1):
        text = " ".join(ln["text"].split())
        blocks.append(f"{i}\n{clock(start, ',')} --> {clock(end, ',')}\n{ln['speaker_name']}: {text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(session: dict, lines: list[dict]) -> str:
    out = ["WEBVTT", "", "NOTE", _vtt_escape(_title(session)).replace("-->", "->"), ""]
    for start, end, ln in _cues(lines):
        name = _vtt_escape(ln["speaker_name"])
        text = _vtt_escape(" ".join(ln["text"].split()))
        out += [f"{clock(start)} --> {clock(end)}", f"<v {name}>{name}: {text}</v>", ""]
    return "\n".join(out)


_RENDER = {"json": to_json, "markdown": to_markdown, "srt": to_srt, "vtt": to_vtt, "text": to_text}


def export(session: dict, lines: list[dict], fmt: str) -> tuple[str, str, str]:
    """``(canonical format, MIME type, content)``; ValueError for an unknown format."""
    key = normalize_format(fmt)
    return key, FORMATS[key], _RENDER[key](session, lines)
