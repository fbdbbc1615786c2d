"""Secrets out of discord.py's log lines: its gateway logs whole events at DEBUG, and a
VOICE_SERVER_UPDATE carries the voice session token (IDENTIFY would carry the bot token). A filter
on every ``discord.*`` logger rewrites such a record before any handler sees it."""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
# "'token': 'abc'" in a dict repr, '"token":"abc"' in JSON, "Bot abc" / "Bearer abc" in headers
_PATTERNS = (
    re.compile(r"""(['"](?:token|access_token|Authorization)['"]\s*:\s*)(['"])(?:(?!\2).)*\2""", re.IGNORECASE),
    re.compile(r"""\b(Bot|Bearer)\s+[A-Za-z0-9._\-]{8,}"""),
)


class Redact(logging.Filter):
    """Rewrite a record's message with tokens and the known secret values replaced."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record goes through as it is
            return True
        clean = _PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", message)
        clean = _PATTERNS[1].sub(lambda m: f"{m.group(1)} {REDACTED}", clean)
        for secret in self.secrets:
            clean = clean.replace(secret, REDACTED)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


REDACT = Redact()


def install(*secrets: str | None) -> None:
    """Attach the filter to every ``discord`` logger there is now (call after importing discord) and
    remember ``secrets`` (e.g. the bot token) to scrub wherever they appear."""
    REDACT.secrets.update(s for s in secrets if s and len(s) >= 6)
    names = ["discord"] + [n for n in logging.root.manager.loggerDict if n.startswith("discord.")]
    for name in names:
        logger = logging.getLogger(name)
        if REDACT not in logger.filters:
            logger.addFilter(REDACT)
