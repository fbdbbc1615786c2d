"""The `dvm` command: parses arguments and calls into dvm.harness / dvm.server. Nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from dvm import __version__
from dvm.errors import DvmError
from dvm.errors import report as report_error


def _int_list(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


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
    p.add_argument("--variant", help="check whisper.cpp through this build (e.g. cuda, from `nox -s build-whispercpp`) instead of the PyPI wheel")
    p.set_defaults(func="dvm.harness.probe.command:cmd_probe")


def _add_models(commands) -> None:
    m = commands.add_parser("models", help="list, import, fetch and locate models", description="Manage models under DVM_HOME.")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    p = msub.add_parser("list", help="known and installed models", description="List known and installed models.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="dvm.harness.commands:cmd_models_list")
    p = msub.add_parser("import", help="convert a CTranslate2 Whisper model directory into a ggml file",
                        description="Convert CTranslate2 Whisper model directory(ies) into whisper.cpp's ggml format. "
                                    "Give several directories for a model split into model.bin.part1, part2, ...")
    p.add_argument("paths", nargs="+", metavar="PATH", help="CTranslate2 model directory (or the directories holding its parts)")
    p.add_argument("--name", help="model name (default: guessed from its size, e.g. tiny.en, base)")
    p.add_argument("--quant", default="f16", choices=["f16", "q8_0", "f32"], help="ggml weight type (default: f16)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="dvm.harness.commands:cmd_models_import")
    p = msub.add_parser("fetch", help="download an upstream ggml model (checksum-verified, resumable)",
                        description="Download ggml-NAME.bin from whisper.cpp's model repository (or DVM_MODEL_BASE_URL).")
    p.add_argument("name")
    p.add_argument("--base-url", help="repository base URL (default: DVM_MODEL_BASE_URL or whisper.cpp's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="dvm.harness.commands:cmd_models_fetch")
    p = msub.add_parser("path", help="print the file path of a model", description="Print the path of an installed model (pip-shipped ones are imported on first use).")
    p.add_argument("name")
    p.add_argument("--format", default="ggml", choices=["ggml", "ct2"])
    p.add_argument("--quant", default="f16", choices=["f16", "q8_0", "f32"])
    p.set_defaults(func="dvm.harness.commands:cmd_models_path")


def _add_transcribe(commands) -> None:
    p = commands.add_parser("transcribe", help="transcribe an audio file", description="Decode any common audio file, resample to 16 kHz mono and transcribe it.")
    p.add_argument("audio", type=Path, metavar="AUDIO")
    p.add_argument("--config", help="a chosen.toml written by `dvm bench` (overrides the engine options)")
    _add_engine_options(p)
    p.add_argument("--json", action="store_true", help="JSON with segments, timings and RTF")
    p.set_defaults(func="dvm.harness.commands:cmd_transcribe")


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
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="device of the faster-whisper cells (whisper.cpp GPU builds such as --variants cuda use their GPU anyway)")
    p.add_argument("--no-concurrency", action="store_true", help="skip the workers x threads serving runs")
    p.add_argument("--workers", nargs="+", type=_int_list,
                   help="worker processes of the serving runs, each with cores/W threads (default: 1 2 4 within the cores)")
    p.add_argument("--anchor", action="store_true", help="also time whisper.cpp's own whisper-cli on the same work (builds from nox -s build-whispercpp)")
    p.add_argument("--wer-budget", type=float, default=0.02, help="WER points above the best a chosen cell may lose (default 0.02)")
    p.add_argument("--out", help="run directory (default results/<platform-id>/run-<UTC time>)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="dvm.harness.bench.commands:cmd_bench")


def _add_gate(commands) -> None:
    p = commands.add_parser("gate", help="compare a run with a committed baseline: exit 0 ok, 1 regression, 2 unusable, 3 speed not judged (machine busy, or the baseline ran on another CPU model)",
                            description="Regression gate on RTF (min of repeats, normalised by a same-run calibration kernel) "
                                        "and WER/hallucination (deterministic greedy decoding). Without RESULTS_DIR the quick matrix runs now.")
    p.add_argument("--baseline", required=True, help="baseline results.json (or its run directory)")
    p.add_argument("results", nargs="?", metavar="RESULTS_DIR", help="the run to check (default: run the quick matrix now)")
    p.add_argument("--threshold", type=float, default=0.10, help="allowed normalised RTF increase (default 0.10 = 10%%)")
    p.add_argument("--wer-tolerance", type=float, default=0.005, help="allowed WER increase per clip (default 0.005)")
    p.add_argument("--busy-cores", type=float, default=0.5,
                   help="speed is not judged when other processes used more cores than this during a cell (default 0.5)")
    p.add_argument("--update-baseline", action="store_true", help="accept RESULTS_DIR as the new baseline (writes --baseline)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="dvm.harness.bench.commands:cmd_gate")


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
    p.set_defaults(func="dvm.server.command:cmd_serve")


def _add_report(commands) -> None:
    p = commands.add_parser("report", help="tables from one or many result directories (merges machines)",
                            description="Merge results.json files (run directories, or folders holding them) into one table.")
    p.add_argument("paths", nargs="+", metavar="RESULTS_DIR")
    p.add_argument("--format", default="table", choices=["table", "md", "csv", "json"])
    p.add_argument("--plot", help="also write the RTF x WER plot to this PNG")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.set_defaults(func="dvm.harness.bench.commands:cmd_report")


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


def _command(target: str):
    """The body of a command, ``"module:function"``, imported only when that command runs (so `--help`
    and every other command stay fast, and a missing optional dependency fails only its command)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_command(args.func)(args) or 0)
    except DvmError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        print("dvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
