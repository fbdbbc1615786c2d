"""What `dvm bench` measures: cells (engine configurations), the curated and explicit matrices for
this machine, the clips, and the plan that puts them together."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from dvm.errors import DvmError
from dvm.harness import clips as clipsmod
from dvm.harness import models
from dvm.harness.bench import choose as chooser
from dvm.harness.engines import EngineConfig
from dvm.harness.variants import registry as variants

GPU_VARIANTS = ("vulkan", "cuda")  # whisper.cpp builds whose cells ask for the GPU backend


@dataclass
class Cell:
    config: EngineConfig
    variant: str = "wheel"  # whisper.cpp build: wheel | native | openblas | vulkan | cuda ...
    workers: int = 1  # >1: concurrency run, W processes x config.threads threads

    def __post_init__(self):
        if self.config.engine == "whispercpp" and self.variant in GPU_VARIANTS and self.config.device == "cpu":
            self.config.device = "gpu"  # the build exists to use its GPU backend; the cell reports where it ran

    @property
    def id(self) -> str:
        c = self.config
        engine = f"whispercpp[{self.variant}]" if c.engine == "whispercpp" else c.engine
        parts = [engine, c.model, c.quant, f"t{c.threads}", f"b{c.beam_size}", f"ctx-{c.audio_ctx}"]
        if c.temperature_fallback:
            parts.append("tfb")
        if c.device != "cpu":
            parts.append(c.device)
        if self.workers > 1:
            parts.append(f"w{self.workers}")
        return "/".join(parts)


@dataclass
class Plan:
    cells: list[Cell]
    clips: list  # dvm.harness.clips.Clip
    warmup: int = 1
    repeats: int = 5


def expand(engines: list[str], models: list[str], threads: list[int], beams: list[int], contexts: list[str],
           whispercpp_quants: list[str], fw_quants: list[str], variants: list[str], language: str = "en",
           device: str = "cpu") -> list[Cell]:
    """The cross product, with each engine's own quantisation axis (and whisper.cpp's build variants).

    ``device`` is faster-whisper's; whisper.cpp cells run where their build puts them (Cell)."""
    cells = []
    for engine, model, t, b in itertools.product(engines, models, threads, beams):
        if engine == "whispercpp":
            for variant, quant, ctx in itertools.product(variants, whispercpp_quants, contexts):
                cells.append(Cell(EngineConfig("whispercpp", model, quant, t, b, ctx, language), variant))
        elif engine == "faster-whisper":
            for quant in fw_quants:
                cells.append(Cell(EngineConfig("faster-whisper", model, quant, t, b, "full", language, device=device)))
        elif engine == "remote":  # the server decides weights and build; one cell per context policy
            for ctx in contexts:
                cells.append(Cell(EngineConfig("remote", model, "f16", t, b, ctx, language)))
        else:
            raise DvmError(f"unknown engine {engine!r}")
    return cells


@dataclass
class BenchOptions:
    clips_dir: Path | None = None
    quick: bool = False
    engines: list[str] | None = None
    models: list[str] | None = None
    threads: list[int] | None = None
    beams: list[int] | None = None
    contexts: list[str] | None = None
    quants: list[str] | None = None
    variants: list[str] | None = None
    repeats: int | None = None
    warmup: int = 1
    concurrency: bool = True
    wer_budget: float = chooser.DEFAULT_WER_BUDGET
    anchor: bool = False  # also time whisper.cpp's own whisper-cli on the same work (where built)
    tiers: list[str] | None = None  # only clips of these tiers (None: all)
    device: str = "cpu"  # faster-whisper's device: cpu | cuda
    workers: list[int] | None = None  # worker counts of the serving runs (None: 1 2 4 within the cores)


def default_clips_dir() -> Path:
    directory = clipsmod.default_clips_dir()
    if directory.is_dir():
        return directory
    raise DvmError(f"no reference clips at {directory}; pass --clips DIR or set DVM_CLIPS_DIR (manifest.json + WAVs, like fixtures/audio)")


def select_clips(all_clips: list, quick: bool, tiers: list[str] | None = None) -> list:
    """English speech with a reference + expected-silence clips; the quick set: 3 speech kinds + 1 silence,
    all timed. ``tiers`` keeps only the clips of those tiers."""
    if tiers:
        known = {c.tier for c in all_clips}
        unknown = sorted(set(tiers) - known)
        if unknown:
            raise DvmError(f"no clips of tier {', '.join(unknown)} (the clips have: {', '.join(sorted(known))})")
        all_clips = [c for c in all_clips if c.tier in tiers]
    elif quick:
        all_clips = [c for c in all_clips if c.timed]
    speech = [c for c in all_clips if c.text and c.language.startswith("en") and c.kind != "dialogue"]
    silent = [c for c in all_clips if c.text == ""]
    unscored = [c for c in all_clips if c.text is None]
    if not quick:
        return speech + silent + unscored
    chosen, kinds = [], set()
    for clip in speech:
        if clip.kind not in kinds:
            chosen.append(clip)
            kinds.add(clip.kind)
        if len(chosen) == 3:
            break
    return chosen + silent[:1]


def available_models() -> list[str]:
    names = []
    for name in models.PIP_MODELS:
        try:
            models.pip_source_dirs(name)
            names.append(name)
        except DvmError:
            continue
    return names or [models.DEFAULT_MODEL]


def _real_vulkan_gpu(profile: dict | None) -> bool:
    """Whether the probe saw a Vulkan device that is not a CPU emulating one (Mesa's lavapipe)."""
    devices = (((profile or {}).get("accelerators") or {}).get("vulkan") or {}).get("devices") or []
    return any(d.get("type") not in ("cpu", None) for d in devices)


def default_cells(quick: bool, cores: int, profile: dict | None = None) -> list[Cell]:
    """The curated matrix: each lever on its own, so every row answers one question."""
    t = min(2, cores) if quick else min(4, cores)

    def wc(model, quant, ctx, threads=t, beam=1, variant="wheel", fallback=False):
        return Cell(EngineConfig("whispercpp", model, quant, threads, beam, ctx, "en", fallback), variant)

    def fw(model, quant, threads=t, beam=1):
        return Cell(EngineConfig("faster-whisper", model, quant, threads, beam, "full", "en"))

    if quick:
        m = models.DEFAULT_MODEL
        return [wc(m, "f16", "full"), wc(m, "f16", "fit"), wc(m, "q8_0", "fit"), fw(m, "int8")]
    cells = []
    built = [v for v in variants.usable_variants() if v != "cuda" or _has_cuda()]
    for m in available_models():
        cells += [wc(m, q, ctx) for q in ("f16", "q8_0") for ctx in ("full", "fit")]
        cells += [wc(m, "q8_0", "fit", threads=1), wc(m, "q8_0", "fit", beam=5)]
        cells += [fw(m, "int8"), fw(m, "float32"), fw(m, "int8", threads=1)]
        for v in built:
            if v == "vulkan":  # on a software device (lavapipe, ~27x slower than the CPU) only on request
                if m == models.DEFAULT_MODEL and _real_vulkan_gpu(profile):
                    cells += [wc(m, q, "fit", variant=v) for q in ("f16", "q8_0")]
                continue
            cells += [wc(m, q, "fit", variant=v) for q in ("f16", "q8_0")]
    cells.append(wc(models.DEFAULT_MODEL, "q8_0", "fit", fallback=True))
    return cells


def _has_cuda() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")


def plan(options: BenchOptions, profile: dict | None = None) -> Plan:
    all_clips = clipsmod.load_clips(options.clips_dir or default_clips_dir())
    clips = select_clips(all_clips, options.quick, options.tiers)
    if not clips:
        raise DvmError("no usable clips: the matrix needs English clips (with or without reference text)")
    cores = os.cpu_count() or 2
    explicit = any([options.engines, options.models, options.threads, options.beams, options.contexts, options.quants, options.variants])
    if explicit:
        engines = options.engines or ["whispercpp", "faster-whisper"]
        quants = options.quants or []
        cells = expand(
            engines=engines,
            models=options.models or [models.DEFAULT_MODEL],
            threads=options.threads or [min(2, cores)],
            beams=options.beams or [1],
            contexts=options.contexts or ["full", "fit"],
            whispercpp_quants=[q for q in quants if q in ("f16", "q8_0", "f32")] or ["f16", "q8_0"],
            fw_quants=[q for q in quants if q not in ("f16", "q8_0", "f32")] or ["int8"],
            variants=options.variants or ["wheel"],
            device=options.device,
        )
    else:
        cells = default_cells(options.quick, cores, profile)
        if options.device != "cpu":
            for cell in cells:
                if cell.config.engine == "faster-whisper":
                    cell.config.device = options.device
    for cell in cells:
        if cell.config.engine == "whispercpp":
            variants.variant_path(cell.variant)  # fails early, with the build command, if a variant is missing
    repeats = options.repeats or (3 if options.quick else 5)
    return Plan(cells=cells, clips=clips, warmup=options.warmup, repeats=repeats)
