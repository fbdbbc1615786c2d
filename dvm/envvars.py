"""Reading numeric settings from environment variables, with one clear error line for bad values."""

from __future__ import annotations

from collections.abc import Mapping

from dvm.errors import DvmError


def number(env: Mapping[str, str], name: str, kind: type, default):
    """``env[name]`` as ``kind`` (int or float); ``default`` when unset or blank; never negative."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise DvmError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value < 0:
        raise DvmError(f"{name} must not be negative: {raw}")
    return value
