"""``python -m dvm.harness.gpukit``: pack here, stage and run on the GPU machine, collect here.

    pack    [--out .gpu] [--models tiny.en base] [--part-mb 30] [--tiers ...] [--faster-whisper]
    plan    [--out .gpu]                 which parts go in which device call (by the tree's size)
    stage   [--from .gpu] [--root DIR]   on the GPU machine: keep the parts this call carried
    run     [--root DIR] --out DIR       on the GPU machine: the matrix, once every part is staged
    collect FILES_AT                     here: the returned files into results/<platform-id>/

Exit codes: 0 done, 1 failed, 2 bad input, 4 (stage) parts still missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

from dvm.errors import DvmError, report
from dvm.harness.gpukit import parts

REPO = Path(__file__).resolve().parents[3]
DEFAULT_ROOT = Path("/tmp/dvm-gpu")
EXIT_MISSING = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dvm.harness.gpukit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="bundle the cuda variant, wheels, models and clips into parts")
    p.add_argument("--out", type=Path, default=REPO / ".gpu")
    p.add_argument("--models", nargs="+", default=["tiny.en", "base"], help="ggml models to carry (f16; q8_0 is made there)")
    p.add_argument("--variant", default="cuda")
    p.add_argument("--python-version", default="3.12", help="the GPU machine's CPython (its wheels and extension)")
    p.add_argument("--tiers", nargs="+", help="clip tiers to carry (default: tts real silence long)")
    p.add_argument("--part-mb", type=int, default=None, help="MiB per part (default: what fits beside the working tree)")
    p.add_argument("--faster-whisper", action="store_true", help="also carry faster-whisper, CTranslate2 and PyAV (~85 MB)")
    p = sub.add_parser("plan", help="which parts go in which device call")
    p.add_argument("--out", type=Path, default=REPO / ".gpu")
    p = sub.add_parser("stage", help="(GPU machine) keep the carried parts; unpack and install once all are there")
    p.add_argument("--from", dest="source", type=Path, default=REPO / ".gpu")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p = sub.add_parser("run", help="(GPU machine) probe and the CUDA matrix; files for the trip back in --out")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", nargs="+", type=int, default=[1, 8], help="concurrent streams of the serving runs")
    p.add_argument("--cpu-threads", type=int, help="threads of the CPU reference row (default: min(8, cores))")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds the steps may take in all (default 480: the device tool stops a command at 600)")
    p = sub.add_parser("collect", help="(here) copy a device run's files into results/<platform-id>/")
    p.add_argument("files", type=Path, help="the folder the device tool put the returned files in")
    p.add_argument("--results", type=Path, default=REPO / "results")
    return parser


def _part_mb() -> int:
    from dvm.harness.gpukit import pack  # noqa: PLC0415 - pack's imports are for this machine only

    free = 64 * 1024 * 1024 - pack.tree_bytes(REPO) - 2 * 1024 * 1024  # room for the tree to grow a little
    return max(4, free // (1024 * 1024))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "pack":
            from dvm.harness.gpukit import pack  # noqa: PLC0415 - this machine only

            index = pack.pack(args.out, args.models, args.variant, args.python_version, args.tiers,
                              part_mb=args.part_mb or _part_mb(), faster_whisper=args.faster_whisper)
            _print_plan(index, args.out)
        elif args.command == "plan":
            _print_plan(parts.read_index(args.out), args.out)
        elif args.command == "stage":
            from dvm.harness.gpukit import device  # noqa: PLC0415 - standard library only, like this module

            ready, message = device.stage(args.source, args.root)
            print(f"stage: {message}", flush=True)
            return 0 if ready else EXIT_MISSING
        elif args.command == "run":
            from dvm.harness.gpukit import device  # noqa: PLC0415 - as above

            if not (args.root / device.READY).exists():
                print(f"gpukit: error: nothing staged in {args.root}; run `stage` with every part first", file=sys.stderr)
                return 2
            summary = device.run(args.root, args.out, REPO, repeats=args.repeats, workers=tuple(args.workers),
                                 cpu_threads=args.cpu_threads, budget_s=args.budget or device.BUDGET_S)
            failed = [s["step"] for s in summary["steps"] if s["exit"] != 0]
            return 1 if failed else 0
        elif args.command == "collect":
            print(collect(args.files, args.results))
    except parts.PartsError as exc:
        print(f"gpukit: error: {exc}", file=sys.stderr)
        return 2
    except DvmError as exc:
        return report(exc)
    return 0


def _print_plan(index: dict, out: Path) -> None:
    from dvm.harness.gpukit import pack  # noqa: PLC0415 - this machine only

    calls = pack.carry_plan(index, out, pack.tree_bytes(REPO))
    rel = out.resolve().relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    print(f"{len(index['parts'])} parts ({index['bytes'] / 1e6:.1f} MB) in {len(calls)} device call(s), back to back "
          "(a machine idle for 30 s is given back, and what it staged with it):")
    for number, names in enumerate(calls, 1):
        carry = json.dumps([f"{rel}/{parts.INDEX}", *(f"{rel}/{n}" for n in names)])
        last = number == len(calls)
        command = "bash scripts/gpu-bench.sh all" if last else "bash scripts/gpu-bench.sh stage"
        print(f"  call {number}: carry={carry} command={command!r} timeout_s={600 if last else 120}")
    print(f"device time: about a minute to start, then {len(calls)} transfers of up to 64 MiB, then the run "
          f"(its steps stop by {device_budget()} s); keep the calls back to back")


def device_budget() -> int:
    from dvm.harness.gpukit import device  # noqa: PLC0415 - standard library only, like this module

    return int(device.BUDGET_S)


def collect(files: Path, results: Path) -> str:
    """Put a device run's returned files under results/<platform-id>/gpu-<UTC time>/; returns that folder."""
    summary = json.loads((files / "summary.json").read_text())
    platform_id = summary.get("platform_id") or "unknown-gpu"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = results / platform_id / f"gpu-{stamp}"
    target.mkdir(parents=True)
    for path in sorted(files.iterdir()):
        if path.name == "runs.tar.gz":
            with tarfile.open(path) as tar:
                tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)
        elif path.is_file():
            shutil.copy2(path, target / path.name)
    return str(target)


if __name__ == "__main__":
    sys.exit(main())
