"""The command line of the variants room (``nox -s build-whispercpp`` and Dockerfile.whisper run it):

    python -m dvm.harness.variants build native|avx2|openblas|vulkan|cuda|wheel ... [--jobs N] [--tools] [--python PATH]
    python -m dvm.harness.variants list
"""

from __future__ import annotations

import argparse
import json
import sys

from dvm.errors import DvmError, report
from dvm.harness.variants.bindings import build
from dvm.harness.variants.registry import FLAGS, WHEEL, installed_variants
from dvm.harness.variants.tools import build_tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.variants", description="Build or list whisper.cpp source variants.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build one or more variants from the pywhispercpp sdist")
    b.add_argument("names", nargs="+", choices=[WHEEL, *sorted(FLAGS)], help="'wheel' builds only the tools (with --tools)")
    b.add_argument("--jobs", type=int)
    b.add_argument("--tools", action="store_true", help="also build whisper-cli, whisper-bench, whisper-server into <variant>/bin")
    b.add_argument("--python", help="build the extension for this Python interpreter (default: the running one)")
    sub.add_parser("list", help="list built variants")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name in args.names:
                if name == WHEEL:  # the PyPI wheel needs no build; its tools do
                    if args.tools:
                        build_tools(WHEEL, args.jobs)
                    else:
                        print("the PyPI wheel needs no build (add --tools for whisper.cpp's own programs)", flush=True)
                    continue
                build(name, args.jobs, tools=args.tools, python=args.python)
        else:
            print(json.dumps(installed_variants(), indent=2))
    except DvmError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
