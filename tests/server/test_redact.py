"""discord.py's log records lose their secrets before any handler sees them."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("discord")
from dvm.server.voice.discord_client import redact


def test_tokens_in_dict_reprs_json_headers_and_known_values_are_scrubbed(caplog):
    redact.install("sekrit-bot-token-123")
    logger = logging.getLogger("discord.gateway")
    with caplog.at_level(logging.DEBUG, logger="discord"):
        logger.debug("event: %s", {"op": 0, "d": {"token": "f8dd88bb249d69d7", "guild_id": "1"}})
        logger.debug('{"op":2,"d":{"token":"abc.def.ghi","intents":1}}')
        logger.debug("headers: Authorization: Bot abcdefgh12345 and Bearer zzzzzzzzzzzz")
        logger.warning("the token was sekrit-bot-token-123, oops")
    text = caplog.text
    for secret in ("f8dd88bb249d69d7", "abc.def.ghi", "abcdefgh12345", "zzzzzzzzzzzz", "sekrit-bot-token-123"):
        assert secret not in text
    assert text.count(redact.REDACTED) == 5 and "guild_id" in text
