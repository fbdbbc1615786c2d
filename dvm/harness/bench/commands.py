"""`dvm bench`, `dvm report` and `dvm gate`: the command bodies (parsing lives in dvm/cli.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dvm.console import console, interactive, print_json
from dvm.errors import DvmError


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
    if interactive(args):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console(stderr=True))
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
        print_json({"out_dir": str(out_dir), "chosen": run["chosen"], "table": report.rows([run])})
        return
    if sys.stdout.isatty():
        report.render_terminal([run], console())
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
        device=args.device, workers=args.workers,
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
        print_json(report.rows(runs))
    elif fmt == "csv":
        sys.stdout.write(report.csv_text(runs))
    elif fmt == "md":
        sys.stdout.write(report.markdown(runs))
    else:
        report.render_terminal(runs, console())
    if args.plot:
        report.plot(runs, Path(args.plot))
    return 0


def cmd_gate(args) -> int:
    import tempfile

    from dvm.harness import probe
    from dvm.harness.bench import gate
    from dvm.harness.bench import runner as bench

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
    verdict = gate.compare(baseline, current, rtf_threshold=args.threshold, wer_tolerance=args.wer_tolerance,
                           busy_cores=args.busy_cores)
    if args.json:
        from dataclasses import asdict

        print_json({"ok": verdict.ok, "platform_id": verdict.platform_id, "calibration_ratio": verdict.calibration_ratio,
                    "speed_judged": verdict.speed_judged, "speed_note": verdict.speed_note, "foreign_cores": verdict.foreign_cores,
                     "regressions": [asdict(f) for f in verdict.regressions], "checked": [asdict(f) for f in verdict.checked]})
    else:
        print(gate.render(verdict))
    if not verdict.ok:
        return 1
    return 0 if verdict.speed_judged else gate.EXIT_NOT_JUDGED
