"""``dvm probe``: a JSON-serialisable hardware profile of this machine (schema: docs/probe.md).

Public API: :func:`collect`, :func:`platform_id` (host.py) and :func:`render` (render.py).
Rooms: host (OS, container, memory, the profile), cpu (CPU, BLAS), gpu (CUDA, ROCm, Metal),
vulkan, engines (engine builds and the parent side of their inference check), engine_check (its
child side), render (the terminal view).
"""

from dvm.harness.probe.host import collect, platform_id
from dvm.harness.probe.render import render  # binds the function over the submodule of the same name

__all__ = ["collect", "platform_id", "render"]
