"""The MCP server: Discord voice tools (the Go server's names), transcripts, search, harness figures.

``build_app(store, pipeline, voice, harness)`` returns an ``MCPServer``; ``run(app, ...)`` serves it on
stdio or streamable HTTP. This package is the only place that imports ``mcp``:

- ``build``: ``build_app``, the server assembled from the tool groups;
- ``tools_voice``, ``tools_transcripts``, ``tools_harness``: each group's tools (and resources);
- ``state``: ``AppState``, the open session and the collaborators (typed by ``dvm.server.protocols``);
- ``live``: ``LiveUpdates``, transcript resource notifications for both subscription flows;
- ``models``: the tools' result models; ``uris``: the resource URIs;
- ``http``: serving (stdio, HTTP with auth) and every reach into the SDK's internals.
"""

from __future__ import annotations

from dvm.server.app.build import INSTRUCTIONS, build_app
from dvm.server.app.http import StaticTokenVerifier, UnsafeBindError, http_app, run
from dvm.server.app.live import LiveUpdates
from dvm.server.app.state import NOT_CONFIGURED, AppState
from dvm.server.app.tools_harness import find_latest_results
from dvm.server.app.uris import SESSIONS_URI, transcript_uri

__all__ = ["INSTRUCTIONS", "NOT_CONFIGURED", "SESSIONS_URI", "AppState", "LiveUpdates", "StaticTokenVerifier",
           "UnsafeBindError", "build_app", "find_latest_results", "http_app", "run", "transcript_uri"]
