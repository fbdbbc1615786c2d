"""Serving mode: MCP app, Discord voice adapter, audio pipeline, sessions store."""
