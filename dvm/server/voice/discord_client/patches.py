"""The discord.py 2.7 patches dvm's voice receive needs: subclasses of its voice internals, and why each exists."""

from __future__ import annotations

import logging
import re
import select
import struct
import time
from typing import Any

import discord
from discord.voice_state import SocketReader, VoiceConnectionState

# The receive hooks below reach into 2.7's private voice internals; another series may have moved them.
if not discord.__version__.startswith("2.7."):
    raise ImportError(f"dvm's Discord adapter needs discord.py 2.7.x, found {discord.__version__}")

log = logging.getLogger("dvm.server.voice")


def api_base(value: str) -> str:
    """``DISCORD_API_BASE`` as discord.py's ``Route.BASE``, which must end in the API version (``/v10``)."""
    value = value.rstrip("/")
    if not re.search(r"/v\d+$", value):
        value += "/v10"
    return value


class _SocketReader(SocketReader):
    """discord.py's UDP reader thread with a short ``select`` timeout.

    Its own waits 30 s on the socket; once a listener is registered (ours, for receive) a voice
    reconnect closes that socket under the waiting ``select``, which Linux does not wake, so IP
    discovery on the new socket sat behind it for up to 30 s.
    """

    def _do_run(self) -> None:
        while not self._end.is_set():
            if not self._running.is_set():
                self._running.wait()
                continue
            sock = self.state.socket
            try:
                readable, _, _ = select.select([sock], [], [], 0.25)
            except (ValueError, TypeError, OSError):  # closed or not made yet
                time.sleep(0.05)
                continue
            if not readable:
                continue
            try:
                data = sock.recv(2048)
            except OSError:
                continue
            for callback in list(self._callbacks):
                try:
                    callback(data)
                except Exception:
                    log.exception("voice socket listener %r failed", callback)


class _ConnectionState(VoiceConnectionState):
    """discord.py's voice connection state, with :class:`_SocketReader` in place of its own reader.

    The reader is made (and started) in ``VoiceConnectionState.__init__``, with no hook to choose
    its class, so ours replaces it right after and discord.py's is stopped.
    """

    def __init__(self, voice_client: discord.VoiceClient, *, hook: Any = None):
        super().__init__(voice_client, hook=hook)
        original = self._socket_reader
        self._socket_reader = _SocketReader(self)
        self._socket_reader.start()
        for _ in range(5):  # stop discord.py's (it may still be starting, which would undo one stop())
            original.stop()
            original.join(0.1)
            if not original.is_alive():
                break


class _VoiceClient(discord.VoiceClient):
    """discord.py's voice client, plus the AES-GCM transport mode and a websocket hook for receive."""

    # discord.py 2.7 offers xchacha20 and the deprecated xsalsa20 modes, not AES-GCM (which Discord lists
    # first); ours are the two "rtpsize" AEAD modes our receiver decrypts, and the voice server's order decides.
    supported_modes = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")

    def create_connection_state(self) -> VoiceConnectionState:
        # The only way to get our socket reader (and the websocket hook) into the connection.
        return _ConnectionState(self, hook=self._ws_hook)

    async def _ws_hook(self, _ws: Any, msg: dict) -> None:
        # discord.py calls this with every voice websocket event after handling it: receive learns
        # the session key (op 4), who owns which SSRC (op 5/12) and who comes and goes from it.
        adapter = getattr(self.client, "dvm_adapter", None)
        if adapter is not None:
            adapter._on_voice_event(self, msg)  # noqa: SLF001 - the adapter's own hook, called from its discord.py subclass

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: bytes) -> bytes:
        # discord.py looks up _encrypt_<mode> for the negotiated mode and 2.7 has no AES-GCM one. Only
        # used if someone plays audio through this client (dvm never does); mirrors the xchacha one.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 - only for the AES-GCM mode

        nonce = struct.pack(">I", self._incr_nonce) + bytes(8)
        self.checked_add("_incr_nonce", 1, 4294967295)
        return header + AESGCM(bytes(self.secret_key)).encrypt(nonce, bytes(data), bytes(header)) + nonce[:4]
