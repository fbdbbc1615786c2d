"""`dvm probe`: the command body (parsing lives in dvm/cli.py)."""

from __future__ import annotations

import sys

from dvm.console import console, print_json


def cmd_probe(args) -> int:
    from dvm.harness import probe

    if args.variant:
        from dvm.harness.variants import registry as variants

        variants.activate(args.variant)  # re-executes with that build's bindings first on the path
    profile = probe.collect(check_engines=not args.no_engines, use_cache=not args.no_cache)
    if args.json or not sys.stdout.isatty():
        print_json(profile)
    else:
        probe.render(profile, console())
    return 0
