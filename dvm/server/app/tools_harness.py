"""The harness tools: this machine's hardware profile and the latest benchmark results for its platform."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from dvm import paths
from dvm.errors import DvmError
from dvm.server.app.state import AppState

log = logging.getLogger("dvm.server.app")


def find_latest_results(dirs: list[Path], platform_id: str | None) -> Path | None:
    """The newest results.json below ``dirs``, preferring those under a ``<platform_id>`` folder."""
    found: list[Path] = []
    for base in dirs:
        if base.is_dir():
            found.extend(base.rglob("results.json"))
    if not found:
        return None
    own = [p for p in found if platform_id and platform_id in p.parts]
    return max(own or found, key=lambda p: (p.stat().st_mtime, str(p)))


def _default_results_dirs() -> list[Path]:
    return [Path.cwd() / "results", paths.dvm_home() / "results"]


def _probe_profile() -> dict:
    from dvm.harness import probe  # noqa: PLC0415 - the probe loads only when a client asks for it

    return probe.collect(check_engines=False)


def _this_platform(state: AppState) -> str | None:
    platform_id = state.harness.get("platform_id") or (state.profile or {}).get("platform_id")
    if platform_id is None:
        try:
            from dvm.harness import probe  # noqa: PLC0415 - the probe loads only when a client asks for it

            platform_id = probe.platform_id()
        except Exception:  # noqa: BLE001 - the profile is optional in this answer: shown as unknown
            platform_id = None
    return platform_id


def latest_benchmark(state: AppState) -> dict[str, Any]:
    """The newest results.json for this platform (or any), as report rows; none found is a tool error."""
    from dvm.harness.bench import report  # noqa: PLC0415 - report (pandas) loads only when a client asks for results

    dirs = [Path(d) for d in state.harness.get("results_dirs") or _default_results_dirs()]
    platform_id = _this_platform(state)
    path = find_latest_results(dirs, platform_id)
    if path is None:
        raise ToolError(f"no benchmark results found under {', '.join(map(str, dirs))}; run `dvm bench` first")
    try:
        run = report.load_run(path)
    except DvmError as exc:
        raise ToolError(str(exc)) from None
    return {
        "platform_id": run.get("platform_id"),
        "this_platform": platform_id,
        "path": str(path),
        "created_at": run.get("created_at") or run.get("started_at"),
        "rows": report.rows([run]),
    }


async def hardware_profile(state: AppState) -> dict[str, Any]:
    """The given profile (a dict or a callable), else the probe's; computed once."""
    if state.profile is None:
        given = state.harness.get("hardware_profile")
        if isinstance(given, dict):
            state.profile = given
        else:
            try:
                state.profile = await anyio.to_thread.run_sync(given or _probe_profile)
            except Exception as exc:
                log.exception("hardware probe failed")
                raise ToolError(f"the hardware probe failed: {type(exc).__name__}: {exc}") from None
    return state.profile


def register(app: MCPServer, state: AppState) -> None:
    """The harness tools."""

    @app.tool()
    async def get_hardware_profile() -> dict[str, Any]:
        """This machine's profile: OS, CPU and SIMD, BLAS, GPUs and which engines/devices are usable."""
        return await hardware_profile(state)

    @app.tool()
    async def get_benchmark_results() -> dict[str, Any]:
        """The latest benchmark run for this platform: RTF and WER per engine/model/threads cell."""
        given = state.harness.get("benchmark_results")
        if callable(given):
            return dict(await anyio.to_thread.run_sync(given))
        return await anyio.to_thread.run_sync(latest_benchmark, state)
