"""The `dvm` command: parses arguments and calls into dvm.harness / dvm.server. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dvm import __version__
from dvm.errors import DvmError
from dvm.errors import report as report_error



def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _interactive(args) -> bool:
    return sys.stdout.isatty() and not getattr(args, "json", False)


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class _Progress:
    """A rich progress bar on a terminal; silent otherwise."""

    def __init__(self, enabled: bool, description: str):
        self.enabled = enabled
        self.description = description
        self._progress = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                      console=_console(stderr=True), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def update(self, done: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)


# ---------------------------------------------------------------------------- probe


def cmd_probe(args) -> int:
    from dvm.harness import probe

    profile = probe.collect(check_engines=not args.no_engines, use_cache=not args.no_cache)
    if args.json or not sys.stdout.isatty():
        _print_json(profile)
    else:
        probe.render(profile, _console())
    return 0


# ---------------------------------------------------------------------------- models


def cmd_models_list(args) -> int:
    from dvm.harness import models

    installed = [m.as_dict() for m in models.installed()]
    known = models.known()
    if args.json or not sys.stdout.isatty():
        _print_json({"installed": installed, "known": known})
        return 0
    from rich.table import Table

    table = Table(title="Installed models")
    for column in ("name", "format", "quant", "size", "sha256", "source"):
        table.add_column(column)
    for m in installed:
        table.add_row(m["name"], m["format"], m["quant"], f"{m['size'] / 1e6:.1f} MB", m["sha256"][:16] + "…", m["source"])
    console = _console()
    console.print(table if installed else "[dim]No models installed yet (the default is imported on first use).[/dim]")
    known_table = Table(title="Known models")
    for column in ("name", "formats", "source", "available"):
        known_table.add_column(column)
    for k in known:
        available = {True: "yes", False: "package missing", None: "download"}[k["available"]]
        known_table.add_row(k["name"], ", ".join(k["formats"]), k["source"], available)
    console.print(known_table)
    return 0


def cmd_models_import(args) -> int:
    from dvm.harness import models

    with _Progress(_interactive(args), "converting") as bar:
        ggml, ct2_record = models.import_ct2(args.paths, name=args.name, quant=args.quant, progress=bar.update)
    if args.json:
        _print_json({"ggml": ggml.as_dict(), "ct2": ct2_record.as_dict()})
    else:
        print(f"imported {ggml.name} ({ggml.quant}): {ggml.path} ({ggml.size / 1e6:.1f} MB, sha256 {ggml.sha256})")
    return 0


def cmd_models_fetch(args) -> int:
    from dvm.harness import models

    with _Progress(_interactive(args), f"ggml-{args.name}.bin") as bar:
        record = models.fetch(args.name, base_url=args.base_url, progress=bar.update)
    if args.json:
        _print_json(record.as_dict())
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


# ---------------------------------------------------------------------------- transcribe


def _engine_config(args):
    from dvm.harness.engines import EngineConfig

    if getattr(args, "config", None):
        from dvm.harness.variants import registry as variants
        from dvm.harness.bench.choose import read_chosen

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
        _print_json(data)
    else:
        print(result.text)
        if sys.stderr.isatty():
            _console(stderr=True).print(
                f"[dim]{engine.config.engine} {engine.config.model} ({engine.config.quant}): {result.audio_seconds:.1f} s audio in "
                f"{result.seconds:.3f} s, RTF {result.rtf:.3f} (load {engine.load_seconds:.2f} s)[/dim]")
    engine.close()
    return 0


# ---------------------------------------------------------------------------- bench / report


def _default_out_dir(platform_id: str) -> Path:
    import datetime as dt

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("results") / platform_id / f"run-{stamp}"


def _bench_line(cell, result) -> str:
    """One line per finished cell (rich markup; stripped when not on a terminal)."""
    from dvm.harness.bench import report

    if "error" in result:
        return f"[red]{cell.id}: {result['error']}[/red]"
    if "records" in result:
        summary = report.summarize_cell(result)
        load = (result.get("machine_load") or {}).get("foreign_cores")
        warn = f"  [yellow]warning: other processes used {load:.2f} cores[/yellow]" if load and load > 0.25 else ""
        return f"{cell.id}: RTF {summary['median_rtf']:.4f}  WER {summary['wer'] if summary['wer'] is not None else float('nan'):.3f}{warn}"
    return f"{cell.id}: {result['throughput_x_realtime']:.1f}x real time, p95 {result['latency_p95_s']:.2f} s"


def _bench_progress(args):
    """(rich progress or None, on_start, on_cell) for `dvm bench`: a bar on a terminal, else lines on stderr."""
    progress, task = None, None
    if _interactive(args):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=_console(stderr=True))
        progress.start()
        task = progress.add_task("bench", total=None)

    def on_start(total):
        if progress:
            progress.update(task, total=total, description="measuring")

    def on_cell(i, total, cell, result):
        line = _bench_line(cell, result)
        if progress:
            progress.update(task, completed=i, description=cell.id)
            progress.console.print(line)
        elif not args.json:
            print(line.replace("[red]", "").replace("[/red]", "").replace("[yellow]", "").replace("[/yellow]", ""), file=sys.stderr)

    return progress, on_start, on_cell


def _print_bench(args, run: dict, out_dir: Path) -> None:
    from dvm.harness.bench import report

    if args.json:
        _print_json({"out_dir": str(out_dir), "chosen": run["chosen"], "table": report.rows([run])})
        return
    if sys.stdout.isatty():
        report.render_terminal([run], _console())
    else:
        sys.stdout.write(report.markdown([run]))
    chosen = run.get("chosen")
    print(f"results: {out_dir}")
    if chosen:
        print(f"chosen: {chosen['cell']} (RTF {chosen['median_rtf']:.4f}, WER {chosen['wer']:.3f}) -> {out_dir / 'chosen.toml'}")


def cmd_bench(args) -> int:
    from dvm.harness import probe
    from dvm.harness.bench import runner as bench

    if args.remote_url:
        os.environ["DVM_REMOTE_URL"] = args.remote_url  # the cell processes inherit it
    profile = probe.collect(check_engines=False)
    platform_id = probe.platform_id(profile)
    options = bench.BenchOptions(
        clips_dir=args.clips, quick=args.quick, engines=args.engines, models=args.models, threads=args.threads,
        beams=args.beams, contexts=args.audio_ctx, quants=args.quants, variants=args.variants, repeats=args.repeats,
        concurrency=not args.no_concurrency, wer_budget=args.wer_budget, anchor=args.anchor, tiers=args.tiers,
    )
    out_dir = Path(args.out) if args.out else _default_out_dir(platform_id)
    progress, on_start, on_cell = _bench_progress(args)
    try:
        run = bench.run(options, out_dir, profile, on_cell=on_cell, on_start=on_start)
    except KeyboardInterrupt:
        if progress:
            progress.stop()
        print(f"dvm: interrupted; finished cells saved in {out_dir}", file=sys.stderr)
        return 130
    finally:
        if progress and progress.live.is_started:
            progress.stop()
    _print_bench(args, run, out_dir)
    return 0


def cmd_report(args) -> int:
    from dvm.harness.bench import report

    runs = report.find_runs(args.paths)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        _print_json(report.rows(runs))
    elif fmt == "csv":
        sys.stdout.write(report.csv_text(runs))
    elif fmt == "md":
        sys.stdout.write(report.markdown(runs))
    else:
        report.render_terminal(runs, _console())
    if args.plot:
        report.plot(runs, Path(args.plot))
    return 0


def cmd_gate(args) -> int:
    import tempfile

    from dvm.harness.bench import runner as bench
    from dvm.harness.bench import gate
    from dvm.harness import probe

    if args.update_baseline:
        if not args.results:
            raise DvmError("--update-baseline needs the RESULTS_DIR to accept as the new baseline")
        path = gate.update_baseline(args.results, args.baseline)
        print(f"baseline updated: {path}")
        return 0
    baseline = gate.load(args.baseline)
    if args.results:
        current = gate.load(args.results)
    else:
        profile = probe.collect(check_engines=False)
        with tempfile.TemporaryDirectory(prefix="dvm-gate-") as tmp:
            options = bench.BenchOptions(quick=True, concurrency=False)
            print("running the quick matrix for the gate ...", file=sys.stderr)
            current = bench.run(options, Path(tmp), profile)
    verdict = gate.compare(baseline, current, rtf_threshold=args.threshold, wer_tolerance=args.wer_tolerance)
    if args.json:
        from dataclasses import asdict

        _print_json({"ok": verdict.ok, "platform_id": verdict.platform_id, "calibration_ratio": verdict.calibration_ratio,
                     "regressions": [asdict(f) for f in verdict.regressions], "checked": [asdict(f) for f in verdict.checked]})
    else:
        print(gate.render(verdict))
    return 0 if verdict.ok else 1


def cmd_serve(args) -> int:
    from dvm.server.main import serve

    if args.config and args.auto_config:
        raise DvmError("give either --config FILE or --auto-config, not both")
    token = args.token or os.environ.get("DVM_HTTP_TOKEN")
    return serve(args.config, args.auto_config, args.transport, args.host, args.port, token, args.allow_host)


def _int_list(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


# ---------------------------------------------------------------------------- parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="whispercpp", choices=["whispercpp", "faster-whisper", "remote"], help="speech engine (default: whispercpp)")
    parser.add_argument("--remote-url", help="engine remote: an OpenAI-compatible server's base URL (or DVM_REMOTE_URL)")
    parser.add_argument("--model", default="tiny.en", help="model name (default: tiny.en, pip-shipped)")
    parser.add_argument("--quant", default=None, help="whispercpp: f16|q8_0; faster-whisper: int8|int8_float32|float32|... (default: f16 / int8)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default), >1 = beam search")
    parser.add_argument("--audio-ctx", default="full", help="encoder context: full | fit (fitted to the clip) | N frames (whispercpp)")
    parser.add_argument("--language", default="en", help="language code (default: en)")
    parser.add_argument("--temperature-fallback", action="store_true", help="retry at higher temperatures when decoding fails")


def _add_probe(commands) -> None:
    p = commands.add_parser("probe", help="hardware profile: CPU SIMD, BLAS, CUDA, Vulkan, ROCm, Metal, engines", description="Report what this machine has and what each speech engine can use, with a reason for every 'no'.")
    p.add_argument("--json", action="store_true", help="stable JSON instead of the panel")
    p.add_argument("--no-engines", action="store_true", help="skip the engines' inference checks (fast)")
    p.add_argument("--no-cache", action="store_true", help="re-run the engines' inference checks instead of using the cache")
    p.set_defaults(func=cmd_probe)


def _add_models(commands) -> None:
    m = commands.add_parser("models", help="list, import, fetch and locate models", description="Manage models under DVM_HOME.")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    p = msub.add_parser("list", help="known and installed models", description="List known and installed models.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("import", help="convert a CTranslate2 Whisper model directory into a ggml file",
                        description="Convert CTranslate2 Whisper model directory(ies) into whisper.cpp's ggml format. "
                                    "Give several directories for a model split into model.bin.part1, part2, ...")
    p.add_argument("paths", nargs="+", metavar="PATH", help="CTranslate2 model directory (or the directories holding its parts)")
    p.add_argument("--name", help="model name (default: guessed from its size, e.g. tiny.en, base)")
    p.add_argument("--quant", default="f16", choices=["f16", "q8_0", "f32"], help="ggml weight type (default: f16)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_import)
    p = msub.add_parser("fetch", help="download an upstream ggml model (checksum-verified, resumable)",
                        description="Download ggml-NAME.bin from whisper.cpp's model repository (or DVM_MODEL_BASE_URL).")
    p.add_argument("name")
    p.add_argument("--base-url", help="repository base URL (default: DVM_MODEL_BASE_URL or whisper.cpp's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_fetch)
    p = msub.add_parser("path", help="print the file path of a model", description="Print the path of an installed model (pip-shipped ones are imported on first use).")
    p.add_argument("name")
    p.add_argument("--format", default="ggml", choices=["ggml", "ct2"])
    p.add_argument("--quant", default="f16", choices=["f16", "q8_0", "f32"])
    p.set_defaults(func=cmd_models_path)


def _add_transcribe(commands) -> None:
    p = commands.add_parser("transcribe", help="transcribe an audio file", description="Decode any common audio file, resample to 16 kHz mono and transcribe it.")
    p.add_argument("audio", type=Path, metavar="AUDIO")
    p.add_argument("--config", help="a chosen.toml written by `dvm bench` (overrides the engine options)")
    _add_engine_options(p)
    p.add_argument("--json", action="store_true", help="JSON with segments, timings and RTF")
    p.set_defaults(func=cmd_transcribe)


def _add_bench(commands) -> None:
    p = commands.add_parser("bench", help="run the RTF x WER matrix and choose a configuration",
                            description="Measure engines x models x quantisations x threads x beams x context policies on "
                                        "reference clips, each cell in a fresh process; write results.json, table.md, table.csv, "
                                        "pareto.png and chosen.toml. Without axis options, the curated matrix for this machine runs.")
    p.add_argument("--quick", action="store_true", help="a small matrix (tiny.en, 4 clips, 3 repeats): well under 3 minutes")
    p.add_argument("--clips", type=Path, help="clips directory: a manifest.json (only id, file, text needed) + audio files, "
                                              "or NAME.wav + NAME.txt pairs; tier sub-directories with their own manifest.json")
    p.add_argument("--tiers", nargs="+", help="only clips of these tiers (tts real real-opus noisy long quiet silence ...); default: all")
    p.add_argument("--engines", nargs="+", choices=["whispercpp", "faster-whisper", "remote"])
    p.add_argument("--remote-url", help="base URL of an OpenAI-compatible transcription server for --engines remote (or DVM_REMOTE_URL)")
    p.add_argument("--models", nargs="+")
    p.add_argument("--quants", nargs="+", help="f16/q8_0 for whispercpp; int8/float32/... for faster-whisper")
    p.add_argument("--threads", nargs="+", type=_int_list)
    p.add_argument("--beams", nargs="+", type=_int_list)
    p.add_argument("--audio-ctx", nargs="+", help="full | fit | N (whispercpp)")
    p.add_argument("--variants", nargs="+", help="whisper.cpp builds: wheel (PyPI) and any built with `nox -s build-whispercpp`")
    p.add_argument("--repeats", type=_int_list, help="timed repeats per clip (default 5; quick 3)")
    p.add_argument("--no-concurrency", action="store_true", help="skip the workers x threads serving runs")
    p.add_argument("--anchor", action="store_true", help="also time whisper.cpp's own whisper-cli on the same work (builds from nox -s build-whispercpp)")
    p.add_argument("--wer-budget", type=float, default=0.02, help="WER points above the best a chosen cell may lose (default 0.02)")
    p.add_argument("--out", help="run directory (default results/<platform-id>/run-<UTC time>)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


def _add_gate(commands) -> None:
    p = commands.add_parser("gate", help="compare a run with a committed baseline: exit 0 ok, 1 regression, 2 unusable",
                            description="Regression gate on RTF (min of repeats, normalised by a same-run calibration kernel) "
                                        "and WER/hallucination (deterministic greedy decoding). Without RESULTS_DIR the quick matrix runs now.")
    p.add_argument("--baseline", required=True, help="baseline results.json (or its run directory)")
    p.add_argument("results", nargs="?", metavar="RESULTS_DIR", help="the run to check (default: run the quick matrix now)")
    p.add_argument("--threshold", type=float, default=0.10, help="allowed normalised RTF increase (default 0.10 = 10%%)")
    p.add_argument("--wer-tolerance", type=float, default=0.005, help="allowed WER increase per clip (default 0.005)")
    p.add_argument("--update-baseline", action="store_true", help="accept RESULTS_DIR as the new baseline (writes --baseline)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gate)


def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="the MCP server: Discord voice in, transcripts out",
                            description="Run the MCP server (stdio by default). --auto-config uses the configuration `dvm bench` chose "
                                        "for this platform (running the quick bench first if there is none). Environment variables of "
                                        "the Go discord-voice-mcp server are honoured (DISCORD_TOKEN, WHISPER_*, AUDIO_*, ...).")
    p.add_argument("--auto-config", action="store_true", help="use results of `dvm bench` for this platform")
    p.add_argument("--config", help="a chosen.toml")
    p.add_argument("--transport", default="stdio", choices=["stdio", "http"])
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1; others require --token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="bearer token required on HTTP (or DVM_HTTP_TOKEN)")
    p.add_argument("--allow-host", action="append", metavar="HOST[:PORT]",
                   help="Host header value clients use to reach a non-loopback --host (repeatable; needed with --host 0.0.0.0)")
    p.set_defaults(func=cmd_serve)


def _add_report(commands) -> None:
    p = commands.add_parser("report", help="tables from one or many result directories (merges machines)",
                            description="Merge results.json files (run directories, or folders holding them) into one table.")
    p.add_argument("paths", nargs="+", metavar="RESULTS_DIR")
    p.add_argument("--format", default="table", choices=["table", "md", "csv", "json"])
    p.add_argument("--plot", help="also write the RTF x WER plot to this PNG")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dvm", description="Measure local speech-to-text on this machine, then serve the best configuration.")
    parser.add_argument("--version", action="version", version=f"dvm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_probe(commands)
    _add_models(commands)
    _add_transcribe(commands)
    _add_bench(commands)
    _add_gate(commands)
    _add_serve(commands)
    _add_report(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DvmError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        print("dvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
