"""A loopback fake Discord that speaks the real protocols, for end-to-end tests of the voice adapter.

REST (HTTPS), the main gateway and the voice gateway (secure websockets), UDP IP discovery and
media, and DAVE for real: the voice server is the MLS external sender and its users are real
``davey`` sessions whose Opus frames are DAVE-encrypted, then transport-encrypted. TLS uses a
CA made at test time; point a client at it with ``SSL_CERT_FILE``.

    fake = FakeDiscord(tmp_path, users=[("alice", "General")]).start()
    env = {"DISCORD_API_BASE": fake.api_base, "DISCORD_GATEWAY_URL": fake.gateway_url}
    ... join ...; fake.wait_media_ready(); fake.speak("alice", "fixtures/audio/en-jfk.wav")
    fake.stop()
"""

from .media import MODES
from .server import FakeDiscord, FakeUser

__all__ = ["MODES", "FakeDiscord", "FakeUser"]
