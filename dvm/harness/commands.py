"""`dvm models ...` and `dvm transcribe`: the command bodies (parsing lives in dvm/cli.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dvm.console import Progress, console, interactive, print_json


def cmd_models_list(args) -> int:
    from dvm.harness import models

    installed = [m.as_dict() for m in models.installed()]
    known = models.known()
    if args.json or not sys.stdout.isatty():
        print_json({"installed": installed, "known": known})
        return 0
    from rich.table import Table

    table = Table(title="Installed models")
    for column in ("name", "format", "quant", "size", "sha256", "source"):
        table.add_column(column)
    for m in installed:
        table.add_row(m["name"], m["format"], m["quant"], f"{m['size'] / 1e6:.1f} MB", m["sha256"][:16] + "…", m["source"])
    out = console()
    out.print(table if installed else "[dim]No models installed yet (the default is imported on first use).[/dim]")
    known_table = Table(title="Known models")
    for column in ("name", "formats", "source", "available"):
        known_table.add_column(column)
    for k in known:
        available = {True: "yes", False: "package missing", None: "download"}[k["available"]]
        known_table.add_row(k["name"], ", ".join(k["formats"]), k["source"], available)
    out.print(known_table)
    return 0


def cmd_models_import(args) -> int:
    from dvm.harness import models

    with Progress(interactive(args), "converting") as bar:
        ggml, ct2_record = models.import_ct2(args.paths, name=args.name, quant=args.quant, progress=bar.update)
    if args.json:
        print_json({"ggml": ggml.as_dict(), "ct2": ct2_record.as_dict()})
    else:
        print(f"imported {ggml.name} ({ggml.quant}): {ggml.path} ({ggml.size / 1e6:.1f} MB, sha256 {ggml.sha256})")
    return 0


def cmd_models_fetch(args) -> int:
    from dvm.harness import models

    with Progress(interactive(args), f"ggml-{args.name}.bin") as bar:
        record = models.fetch(args.name, base_url=args.base_url, progress=bar.update)
    if args.json:
        print_json(record.as_dict())
    else:
        print(f"fetched {record.name}: {record.path} ({record.size / 1e6:.1f} MB, sha256 {record.sha256})")
    return 0


def cmd_models_path(args) -> int:
    from dvm.harness import models

    if args.format == "ggml":
        print(models.ensure_ggml(args.name, args.quant) if args.name in models.PIP_MODELS else models.model_path(args.name, "ggml", args.quant))
    else:
        print(models.ensure_ct2(args.name))
    return 0


def _engine_config(args):
    from dvm.harness.engines import EngineConfig

    if getattr(args, "config", None):
        from dvm.harness.bench.choose import read_chosen
        from dvm.harness.variants import registry as variants

        chosen = read_chosen(Path(args.config))
        if chosen["engine"]["engine"] == "whispercpp":
            variants.activate(chosen["engine"].get("variant", "wheel"))
        return EngineConfig.from_dict(chosen["engine"])
    if getattr(args, "remote_url", None):
        os.environ["DVM_REMOTE_URL"] = args.remote_url  # inherited by bench's cell processes too
    quant = args.quant or ("int8" if args.engine == "faster-whisper" else "f16")
    return EngineConfig(engine=args.engine, model=args.model, quant=quant, threads=args.threads,
                        beam_size=args.beam_size, audio_ctx=args.audio_ctx, language=args.language,
                        temperature_fallback=args.temperature_fallback)


def cmd_transcribe(args) -> int:
    from dvm.harness import engines
    from dvm.harness.audio import load_audio

    pcm = load_audio(args.audio)
    engine = engines.create(_engine_config(args))
    engine.load()
    result = engine.transcribe(pcm)
    if args.json:
        data = result.as_dict()
        data.update({"audio": str(args.audio), "load_seconds": engine.load_seconds, "config": engine.config.as_dict(), "engine": engine.info()})
        print_json(data)
    else:
        print(result.text)
        if sys.stderr.isatty():
            console(stderr=True).print(
                f"[dim]{engine.config.engine} {engine.config.model} ({engine.config.quant}): {result.audio_seconds:.1f} s audio in "
                f"{result.seconds:.3f} s, RTF {result.rtf:.3f} (load {engine.load_seconds:.2f} s)[/dim]")
    engine.close()
    return 0
