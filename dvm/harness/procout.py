"""What a child process printed, boiled down for one-line error messages."""

from __future__ import annotations


def last_line(text: str | None, default: str = "no output", limit: int | None = None) -> str:
    """The last non-blank line of ``text`` (stripped, cut to ``limit`` characters), or ``default``."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:limit] if lines else default
