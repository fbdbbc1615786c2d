"""What whisper.cpp prints, parsed: its ``whisper_print_timings`` lines and its system-info line.

Shared by the engine (engines/whispercpp.py), the probe (probe/engines.py) and the whisper-cli
anchor (bench/anchor.py); standard library only, so the probe stays light.
"""

from __future__ import annotations

import re

# "whisper_print_timings:   encode time =   123.45 ms /     1 runs (  123.45 ms per run)"
TIMING = re.compile(r"whisper_print_timings:\s+(\w+) time =\s+([\d.]+) ms(?:\s*/\s*(\d+) runs)?")


def timings_ms(text: str) -> list[tuple[str, float, int | None]]:
    """(phase, milliseconds, runs or None) for every timing line in ``text``, in order."""
    return [(name, float(ms), int(runs) if runs else None) for name, ms, runs in TIMING.findall(text)]


def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """``WHISPER : COREML = 0 | CPU : SSE3 = 1 | ...`` -> {"WHISPER": {"COREML": "0"}, "CPU": {"SSE3": "1"}}."""
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for part in text.split("|"):
        if " : " in part:
            current, _, part = (s.strip() for s in part.partition(" : "))
            sections.setdefault(current, {})
        key, sep, value = part.partition("=")
        if sep and key.strip():
            sections.setdefault(current, {})[key.strip()] = value.strip()
    return sections


def build_features(text: str) -> dict[str, str]:
    """The system-info line flattened to {feature: value}; a backend section (CUDA, Vulkan ...) other
    than WHISPER and CPU also counts as the feature ``<BACKEND>`` = "1" unless the line sets it."""
    sections = parse_system_info(text)
    features = {key: value for entries in sections.values() for key, value in entries.items()}
    for backend in sections:
        if backend and backend not in ("WHISPER", "CPU"):
            features.setdefault(backend.upper(), "1")
    return features
