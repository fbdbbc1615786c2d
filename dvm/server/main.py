"""`dvm serve`: settings -> store -> pipeline -> voice adapter -> MCP app -> transport."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from dvm.errors import DvmError

log = logging.getLogger("dvm.server")


def resolve_config(auto: bool, config_file: str | None, announce=print) -> Path | None:
    """The chosen.toml to serve with: explicit, or this platform's (running the quick bench if missing)."""
    if config_file:
        return Path(config_file)
    if not auto:
        return None
    from dvm.harness import probe
    from dvm.harness.bench import runner as bench
    from dvm.harness.bench.choose import chosen_path

    profile = probe.collect(check_engines=False)
    path = chosen_path(probe.platform_id(profile))
    if path.exists():
        return path
    announce(f"no chosen configuration for {probe.platform_id(profile)} yet: running the quick benchmark first (about a minute)")
    out = path.parent / f"bench-{probe.platform_id(profile)}"
    bench.run(bench.BenchOptions(quick=True), out, profile,
              on_cell=lambda i, total, cell, result: announce(f"  [{i}/{total}] {cell.id}"))
    if not path.exists():
        raise DvmError("the quick benchmark chose no configuration (every cell failed?)")
    return path


def build(settings, store_path: Path | None = None):
    """Store, pipeline and voice adapter for these settings (nothing started)."""
    from dvm.harness import engines
    from dvm.harness.variants import registry as variants
    from dvm.server.pipeline import Pipeline
    from dvm.server.store import Store

    if settings.engine.engine == "whispercpp" and settings.variant != "wheel":
        variants.activate(settings.variant)
    store = Store(store_path)
    pipeline = Pipeline(lambda: engines.create(settings.engine), store, settings)
    voice = None
    if settings.discord_token:
        try:
            from dvm.server.voice.discord_client import DiscordVoice
        except ImportError as exc:
            log.warning("DISCORD_TOKEN is set but the Discord adapter cannot load (%s); serving without voice", exc)
        else:
            voice = DiscordVoice(settings)
    return store, pipeline, voice


DRAIN_TIMEOUT_S = 20.0  # how long a stop waits for the utterances in flight to be transcribed and committed


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, a supervisor) stops the server like Ctrl-C: through shutdown()."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def shutdown(store, pipeline, voice, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Leave voice, finish and commit the utterances in flight (bounded wait), end this process's open
    sessions, close the store. Safe to call once on any way out."""
    try:
        if voice is not None:
            voice.shutdown()  # leave voice cleanly before the last utterances are drained
    finally:
        if not pipeline.stop(drain=True, timeout=drain_timeout_s):
            log.warning("stopped after %.0f s with decodes still in flight; their lines are lost", drain_timeout_s)
        ended = store.end_own_sessions()
        if ended:
            log.info("ended %d open session(s) on shutdown", len(ended))
        store.close()


def serve(config_file: str | None, auto: bool, transport: str, host: str, port: int, token: str | None,
          allowed_hosts: list[str] | None = None) -> int:
    from dvm.server import config
    from dvm.server.app import build_app, run

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = resolve_config(auto, config_file, announce=lambda text: print(text, file=sys.stderr, flush=True))
    settings = config.load(path)
    # The receive, VAD and MCP threads share the cores with the transcription threads: OpenMP's
    # busy-waiting would steal them (measured: 1 worker x 2 threads went from p95 1.9 s to 8 s with
    # 4 speakers). Set before the engine's OpenMP runtime loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    log.info("serving with %s (%s)", settings.engine.as_dict(), settings.source)
    store, pipeline, voice = build(settings)
    pipeline.start()
    app = build_app(store, pipeline, voice)  # it also hooks pipeline.on_line for live transcript updates
    stop_on_sigterm()
    try:
        run(app, transport=transport, host=host, port=port, token=token, allowed_hosts=allowed_hosts or None)
    except KeyboardInterrupt:
        log.info("stopping: finishing the utterances in flight")
    finally:
        shutdown(store, pipeline, voice)
    return 0
