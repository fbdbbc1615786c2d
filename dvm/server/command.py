"""`dvm serve`: the command body (parsing lives in dvm/cli.py)."""

from __future__ import annotations

import os

from dvm.errors import DvmError


def cmd_serve(args) -> int:
    from dvm.server.main import serve

    if args.config and args.auto_config:
        raise DvmError("give either --config FILE or --auto-config, not both")
    token = args.token or os.environ.get("DVM_HTTP_TOKEN")
    return serve(args.config, args.auto_config, args.transport, args.host, args.port, token, args.allow_host)
