"""The project's error family and its one error-line format.

Every exception a user can act on (bad input, a missing model, an unknown session, an unsafe bind)
is a ``DvmError`` subclass; every entry point prints it as ``dvm: error: <message>`` on stderr, with
no traceback, and exits with ``EXIT_INPUT``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_INPUT = 2  # the status of a run stopped by a DvmError (argparse uses 2 for bad arguments too)


class DvmError(Exception):
    """A problem the user can act on; its message is printed as one line, no traceback."""


def shown(value: object, limit: int = 60) -> str:
    """``value`` as it may be echoed back in an error: repr, cut to ``limit`` characters with its length."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(str(value))} characters)"


def error_line(exc: BaseException) -> str:
    """The one-line form of ``exc``: newlines folded, so a wrapped message stays one line."""
    message = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"dvm: error: {message}"


def report(exc: BaseException) -> int:
    """Print ``exc`` as the error line on stderr; returns the exit status to use."""
    print(error_line(exc), file=sys.stderr)
    return EXIT_INPUT


def parse_file(path: Path, parse: Callable[[str], Any], invalid: type[Exception], missing: str, kind: str) -> Any:
    """``parse`` of the text at ``path``; a missing file or a parse error (``invalid``) is a DvmError
    naming the file: ``missing`` is the sentence for the first, ``kind`` names what it should be."""
    if not path.exists():
        raise DvmError(f"{path}: {missing}")
    try:
        return parse(path.read_text())
    except invalid as exc:
        raise DvmError(f"{path}: not valid {kind} ({exc})") from None
