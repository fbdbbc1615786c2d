"""Discord voice: the adapter (discord.py glue) and our own receive path (RTP, AEAD, DAVE, Opus)."""
