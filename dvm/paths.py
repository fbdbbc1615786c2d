"""Where dvm keeps its state: models, transcripts, chosen configs (``DVM_HOME``)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def dvm_home() -> Path:
    """Return the state directory, creating it if needed."""
    env = os.environ.get("DVM_HOME")
    home = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("dvm", appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def models_dir() -> Path:
    path = dvm_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
