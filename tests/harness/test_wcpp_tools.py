"""whisper.cpp's own tools: parsing their printed figures (output recorded from the wheel-flag build
of whisper.cpp 1.8.5), the command the anchor runs, and the anchor itself when the tools are built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dvm.harness.bench import anchor as wcpp_tools
from dvm.harness.variants import tools
from dvm.errors import DvmError

# whisper-cli -m ggml-tiny.en.bin -t 2 -ac 0 -bs 1 -l en -nf -ng -f en-jfk.wav (stdout, then the end of stderr)
CLI_STDOUT = """
[00:00:00.000 --> 00:00:08.000]   And so my fellow Americans ask not what your country can do for you
[00:00:08.000 --> 00:00:11.000]   ask what you can do for your country.
"""
CLI_STDERR = """whisper_init_state: compute buffer (decode) =   95.91 MB

system_info: n_threads = 2 / 2 | WHISPER : COREML = 0 | OPENVINO = 0 | CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 | 

main: processing 'fixtures/audio/en-jfk.wav' (176000 samples, 11.0 sec), 2 threads, 1 processors, 1 beams + best of 5, lang = en, task = transcribe, timestamps = 1 ...


whisper_print_timings:     load time =    48.57 ms
whisper_print_timings:     fallbacks =   0 p /   0 h
whisper_print_timings:      mel time =    33.97 ms
whisper_print_timings:   sample time =    54.86 ms /     1 runs (    54.86 ms per run)
whisper_print_timings:   encode time =  1149.77 ms /     1 runs (  1149.77 ms per run)
whisper_print_timings:   decode time =  2961.53 ms /    27 runs (   109.69 ms per run)
whisper_print_timings:   batchd time =     0.00 ms /     1 runs (     0.00 ms per run)
whisper_print_timings:   prompt time =     0.00 ms /     1 runs (     0.00 ms per run)
whisper_print_timings:    total time =  4264.27 ms
"""

# whisper-bench -m ggml-tiny.en.bin -t 2 -ng (stderr, the part after the model-load messages)
BENCH_STDERR = """
system_info: n_threads = 2 / 2 | WHISPER : COREML = 0 | OPENVINO = 0 | CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 | 

whisper_print_timings:     load time =    79.13 ms
whisper_print_timings:     fallbacks =   0 p /   0 h
whisper_print_timings:      mel time =     0.00 ms
whisper_print_timings:   sample time =     0.00 ms /     1 runs (     0.00 ms per run)
whisper_print_timings:   encode time =  1071.19 ms /     1 runs (  1071.19 ms per run)
whisper_print_timings:   decode time =  2365.16 ms /   256 runs (     9.24 ms per run)
whisper_print_timings:   batchd time =  1573.43 ms /   320 runs (     4.92 ms per run)
whisper_print_timings:   prompt time = 10998.59 ms /  4096 runs (     2.69 ms per run)
whisper_print_timings:    total time = 16009.16 ms

If you wish, you can submit these results here:

  https://github.com/ggml-org/whisper.cpp/issues/89
"""

JFK_WORDS = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


def test_parse_cli_timings():
    t = wcpp_tools.parse_timings(CLI_STDERR)
    assert t["load_ms"] == 48.57 and t["encode_ms"] == 1149.77 and t["decode_runs"] == 27
    assert t["total_ms"] == 4264.27 and t["fallbacks"] == 0
    assert t["work_ms"] == pytest.approx(4264.27 - 48.57)
    assert t["compute_ms"] == pytest.approx(33.97 + 54.86 + 1149.77 + 2961.53)
    assert t["threads"] == 2 and "AVX2 = 1" in t["system_info"] and "AVX512" not in t["system_info"]


def test_parse_cli_transcript():
    text = wcpp_tools.parse_transcript(CLI_STDOUT)
    assert text.startswith("And so my fellow Americans ask not") and "  " not in text
    assert words(text) == JFK_WORDS
    assert wcpp_tools.parse_transcript(" plain line from -nt\n\n") == "plain line from -nt"


def test_parse_bench():
    b = wcpp_tools.parse_bench(BENCH_STDERR)
    assert b["encode_ms_per_run"] == pytest.approx(1071.19)
    assert b["decode_ms_per_run"] == pytest.approx(2365.16 / 256)
    assert b["prompt_runs"] == 4096 and b["threads"] == 2
    assert wcpp_tools.parse_bench("no timings here") == {}


def test_cli_command_matches_a_dvm_cell():
    command = wcpp_tools.cli_command(Path("/b/whisper-cli"), Path("/m.bin"), Path("/c.wav"), threads=3, audio_ctx=678, files=2)
    assert command[:11] == ["/b/whisper-cli", "-m", "/m.bin", "-t", "3", "-ac", "678", "-bs", "1", "-l", "en"]
    assert "-nf" in command and "-ng" in command and "-nt" not in command  # timestamps decoded, as in dvm
    assert command.count("-f") == 2
    with_fallback = wcpp_tools.cli_command(Path("w"), Path("m"), Path("c"), 1, 0, fallback=True, gpu=True, beam_size=5)
    assert "-nf" not in with_fallback and "-ng" not in with_fallback and with_fallback[with_fallback.index("-bs") + 1] == "5"


def test_anchor_ratio():
    r = wcpp_tools.anchor_ratio(0.515, {"warm_s": 0.5})
    assert r["ratio"] == pytest.approx(1.03) and r["overhead_pct"] == pytest.approx(3.0)
    assert "noisy" not in r and "ratio_vs_mean" not in r
    r = wcpp_tools.anchor_ratio(0.5, {"warm_s": 0.25, "mean_s": 0.5, "noisy": True})
    assert r["ratio"] == 2 and r["ratio_vs_mean"] == 1 and r["noisy"]


def test_tool_flags_and_paths(tmp_path):
    assert tools.tool_flags("native") == ["-DGGML_NATIVE=ON"]
    wheel = tools.tool_flags("wheel")
    assert "-DGGML_NATIVE=OFF" in wheel and not any("AVX512" in f for f in wheel)
    with pytest.raises(DvmError, match="unknown variant"):
        tools.tool_flags("nope")
    assert tools.tool_path("wheel", "whisper-cli", base=tmp_path) is None
    (tmp_path / "wheel" / "bin").mkdir(parents=True)
    (tmp_path / "wheel" / "bin" / ("whisper-cli" + tools.EXE)).write_text("")
    assert tools.tool_path("wheel", "whisper-cli", base=tmp_path) is not None
    with pytest.raises(DvmError, match="unknown tool"):
        tools.tool_path("wheel", "whisper-nope")


# ---------------------------------------------------------------------------- against the built tools


@pytest.fixture(scope="module")
def built_variant() -> str:
    cli = tools.find_tool("whisper-cli")
    if cli is None:
        pytest.skip("whisper.cpp's tools are not built; `nox -s build-whispercpp -- wheel` "
                    "or `python -m dvm.harness.bench.anchor build wheel`")
    return cli.parent.parent.name


@pytest.mark.slow
def test_anchor_runs_whisper_cli(built_variant, jfk_path):
    from dvm.harness import models

    result = wcpp_tools.anchor(built_variant, models.default_ggml_path(), jfk_path, threads=2, audio_ctx="fit",
                               repeats=1, trials=1)
    assert words(result["text"]) == JFK_WORDS
    assert result["audio_ctx_frames"] == 11 * 50 + 128
    assert 0 < result["mean_s"] < 30 and result["warm_phases"]["encode_s"] >= 0
    assert len(result["trials_total_ms"]["multi"]) == 1
    assert result["load_s"] > 0 and result["fallbacks"] == 0


@pytest.mark.slow
def test_whisper_bench_figures(built_variant):
    from dvm.harness import models

    bench = wcpp_tools.bench(built_variant, models.default_ggml_path(), threads=2)
    assert bench["encode_ms_per_run"] > 0 and bench["decode_runs"] == 256


def test_missing_tool_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(wcpp_tools, "find_tool", lambda name, variant=None: None)
    monkeypatch.setattr(wcpp_tools, "tool_path", lambda variant, name, base=None: None)
    with pytest.raises(DvmError, match="whisper-cli for avx2 is not built"):
        wcpp_tools.anchor("avx2", tmp_path / "m.bin", tmp_path / "c.wav", threads=1)
