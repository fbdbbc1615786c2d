"""The Discord adapter's connection state: one enum, and the one method that changes it (validated, logged)."""

from __future__ import annotations

import enum
import logging
import threading
from typing import Iterable

log = logging.getLogger("dvm.server.voice")


class VoiceState(enum.Enum):
    """Where the adapter is: its client's lifecycle, then (while the client is ready) its voice connection."""

    STOPPED = "stopped"  # no client running: before the first join, or after it stopped cleanly
    STARTING = "starting"  # a client is logging in and connecting to the gateway
    FAILED = "failed"  # the client stopped with an error; the next join starts a new one
    READY = "ready"  # gateway ready, not in a voice channel
    JOINING = "joining"  # connecting or moving to a voice channel
    CONNECTED = "connected"  # in a voice channel
    LOST = "lost"  # discord.py gave the voice connection up; the watchdog rejoins the target channel
    LEAVING = "leaving"  # disconnecting from voice
    CLOSED = "closed"  # shut down for good (terminal)


S = VoiceState
_LIVE = frozenset(S) - {S.CLOSED}
# new state -> the states it may be entered from. Joins, leaves and follow moves run as separate tasks on
# the client's loop and may interleave, so each settles on whatever the connection then is (READY,
# CONNECTED or LOST) from any of the voice states.
VOICE = frozenset({S.READY, S.JOINING, S.CONNECTED, S.LOST, S.LEAVING})  # the client is ready; voice comes and goes
_FROM: dict[VoiceState, frozenset[VoiceState]] = {
    S.STARTING: _LIVE,  # a (re)start: the first client, or a new one after the last stopped
    S.STOPPED: _LIVE,
    S.FAILED: _LIVE,
    S.CLOSED: _LIVE,
    S.READY: VOICE | {S.STARTING},
    S.JOINING: VOICE | {S.STARTING},  # a follow move may come while a restarted client gets ready
    S.CONNECTED: VOICE,
    S.LOST: VOICE,
    S.LEAVING: VOICE,
}


class InvalidTransitionError(RuntimeError):
    """A state change the adapter's lifecycle does not have (a bug in the adapter)."""


class StateMachine:
    """The current :class:`VoiceState`; changed from the client's loop and from callers' threads."""

    def __init__(self) -> None:
        self._state = S.STOPPED
        self._lock = threading.Lock()

    @property
    def state(self) -> VoiceState:
        return self._state

    def transition(self, new: VoiceState, reason: str, only_from: Iterable[VoiceState] | None = None) -> bool:
        """Enter ``new``; True if the state changed.

        ``only_from`` makes it conditional: from any other state nothing happens. Leaving CLOSED is
        ignored (late callbacks after shutdown are normal); any other change not in the lifecycle raises.
        """
        with self._lock:
            old = self._state
            if old is new or (only_from is not None and old not in set(only_from)):
                return False
            if old is S.CLOSED:
                log.debug("voice state: CLOSED -> %s ignored (%s)", new.name, reason)
                return False
            if old not in _FROM[new]:
                raise InvalidTransitionError(f"voice state: {old.name} -> {new.name} is not a transition ({reason})")
            self._state = new
        log.info("voice state: %s -> %s (%s)", old.name, new.name, reason)
        return True
