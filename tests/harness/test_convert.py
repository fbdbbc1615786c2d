"""The CTranslate2 -> ggml converter: header, filters, vocabulary, tensor set, quantisation."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dvm.harness import convert, ct2, models
from dvm.errors import DvmError


@pytest.fixture(scope="module")
def tiny_ct2():
    return models.ensure_ct2("tiny.en")


@pytest.fixture(scope="module")
def tiny_ggml(tmp_path_factory, tiny_ct2):
    out = tmp_path_factory.mktemp("ggml") / "tiny.en.bin"
    report = convert.convert(tiny_ct2, out)
    return out, report


def read_ggml(path):
    """Parse a ggml file back (our reader, independent of the writer's code paths)."""
    data = path.read_bytes()
    magic, *hp = struct.unpack_from("<I11i", data, 0)
    off = 48
    n_mel, n_fft = struct.unpack_from("<ii", data, off)
    off += 8
    filters = np.frombuffer(data, "<f4", n_mel * n_fft, off).reshape(n_mel, n_fft)
    off += n_mel * n_fft * 4
    (n_tokens,) = struct.unpack_from("<i", data, off)
    off += 4
    tokens = []
    for _ in range(n_tokens):
        (length,) = struct.unpack_from("<I", data, off)
        off += 4
        tokens.append(data[off:off + length])
        off += length
    tensors = {}
    sizes = {convert.TYPE_F32: 4, convert.TYPE_F16: 2}
    while off < len(data):
        n_dims, name_len, ttype = struct.unpack_from("<iii", data, off)
        off += 12
        ne = struct.unpack_from(f"<{n_dims}i", data, off)
        off += 4 * n_dims
        name = data[off:off + name_len].decode()
        off += name_len
        count = int(np.prod(ne))
        nbytes = count * sizes[ttype] if ttype in sizes else count // 32 * 34
        tensors[name] = (ttype, tuple(ne), data[off:off + nbytes])
        off += nbytes
    assert off == len(data)
    return magic, hp, filters, tokens, tensors


def test_header_and_tensor_set(tiny_ggml):
    path, report = tiny_ggml
    magic, hp, filters, tokens, tensors = read_ggml(path)
    assert magic == convert.GGML_MAGIC
    assert hp == [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1]
    assert filters.shape == (80, 201)
    assert len(tokens) == convert.N_FILE_TOKENS
    # whisper.cpp's loader creates 7 encoder globals + 15 per encoder layer, 4 decoder globals
    # + 24 per decoder layer, and insists on every one of them: nothing missing, nothing else.
    expected = 7 + 15 * 4 + 4 + 24 * 4
    assert len(tensors) == expected == report.n_tensors
    assert "encoder.blocks.0.attn.key.bias" not in tensors
    assert tensors["encoder.conv1.weight"][:2] == (convert.TYPE_F16, (3, 80, 384))
    assert tensors["encoder.conv1.bias"][:2] == (convert.TYPE_F32, (1, 384))
    assert tensors["encoder.positional_embedding"][:2] == (convert.TYPE_F32, (384, 1500))
    assert tensors["decoder.token_embedding.weight"][:2] == (convert.TYPE_F16, (384, 51864))
    assert tensors["decoder.blocks.3.cross_attn.value.weight"][:2] == (convert.TYPE_F16, (384, 384))
    assert tensors["encoder.blocks.0.mlp_ln.weight"][:2] == (convert.TYPE_F32, (384,))


def test_fused_projections_are_split_exactly(tiny_ct2, tiny_ggml):
    path, _ = tiny_ggml
    *_, tensors = read_ggml(path)
    model = ct2.load(tiny_ct2)
    fused = model.get("decoder/layer_1/self_attention/linear_0/weight")
    key = np.frombuffer(tensors["decoder.blocks.1.attn.key.weight"][2], "<f2").reshape(384, 384)
    value = np.frombuffer(tensors["decoder.blocks.1.attn.value.weight"][2], "<f2").reshape(384, 384)
    np.testing.assert_array_equal(key, fused[384:768])
    np.testing.assert_array_equal(value, fused[768:])
    kv = model.get("decoder/layer_2/attention/linear_1/bias")
    vbias = np.frombuffer(tensors["decoder.blocks.2.cross_attn.value.bias"][2], "<f4")
    np.testing.assert_allclose(vbias, kv[384:].astype(np.float32))


def test_vocabulary_is_raw_bytes(tiny_ggml):
    *_, tokens, _ = read_ggml(tiny_ggml[0])
    assert tokens[0] == b"!"
    assert tokens[220] == b" "  # GPT-2 maps the space byte to U+0120
    assert tokens[198] == b"\n"
    assert tokens[50256] == b"<|endoftext|>"
    assert b" Americans" in tokens


def test_mel_filters_match_independent_implementation(tiny_ggml):
    """faster-whisper computes Whisper's Slaney mel bank with its own numpy code."""
    from faster_whisper.feature_extractor import FeatureExtractor

    _, _, filters, _, _ = read_ggml(tiny_ggml[0])
    reference = FeatureExtractor.get_mel_filters(16000, 400, 80)
    np.testing.assert_allclose(filters, reference, atol=1e-6)


def test_q8_0_roundtrip():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(64, 96)).astype(np.float32)
    data = convert.quantize_q8_0(matrix)
    assert len(data) == 64 * 96 // 32 * 34
    back = convert.dequantize_q8_0(data, matrix.shape)
    blocks = np.abs(matrix.reshape(-1, 32)).max(axis=1) / 127
    assert np.all(np.abs(back - matrix).reshape(-1, 32) <= blocks[:, None] * 0.5 + 1e-3)


def test_q8_0_file(tmp_path, tiny_ct2, tiny_ggml):
    out = tmp_path / "tiny.en-q8_0.bin"
    convert.convert(tiny_ct2, out, quant="q8_0")
    magic, hp, _, _, tensors = read_ggml(out)
    assert hp[-1] == 2007  # Q8_0 (7) + quantisation version 2 * 1000
    assert tensors["decoder.token_embedding.weight"][0] == convert.TYPE_Q8_0
    assert tensors["encoder.conv2.weight"][0] == convert.TYPE_F16
    assert tensors["encoder.blocks.0.attn.query.bias"][0] == convert.TYPE_F32
    assert out.stat().st_size < 0.6 * tiny_ggml[0].stat().st_size


def test_corrupt_model_gives_clear_error(tmp_path, tiny_ct2):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes((tiny_ct2 / "model.bin").read_bytes()[:5000])
    (broken / "vocabulary.txt").write_text("a\n")
    with pytest.raises(DvmError, match="truncated or corrupt"):
        convert.convert(broken, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert not (tmp_path / "out.bin.partial").exists()


def test_not_a_model_directory(tmp_path):
    with pytest.raises(DvmError, match="no model.bin"):
        convert.convert(tmp_path, tmp_path / "out.bin")


@pytest.mark.slow
def test_reference_header_from_whisper_cpp_sources(tiny_ggml):
    """whisper.cpp ships weightless reference files of each model: our header and filters match."""
    from dvm.harness.variants import sdist

    try:
        reference = sdist.sdist_file("whisper.cpp/models/for-tests-ggml-tiny.en.bin")
    except DvmError as exc:
        pytest.skip(str(exc))
    ours = tiny_ggml[0].read_bytes()
    theirs = reference.read_bytes()
    assert ours[:48] == theirs[:48]
    f_ours = np.frombuffer(ours, "<f4", 80 * 201, 56)
    f_theirs = np.frombuffer(theirs, "<f4", 80 * 201, 56)
    np.testing.assert_allclose(f_ours, f_theirs, atol=1e-7)
