"""Convert a CTranslate2 Whisper model into whisper.cpp's ggml file.

The ggml layout whisper.cpp's loader reads (all little-endian):

    uint32 magic 0x67676d6c ("ggml")
    int32  n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
           n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
    int32  n_mel, n_fft; float32 filters[n_mel * n_fft]           (mel filter bank)
    int32  n_tokens; per token: uint32 length, raw bytes            (regular tokens only;
                                                                    the loader names the specials)
    per tensor: int32 n_dims, int32 name_length, int32 type, int32 ne[n_dims] (fastest axis first),
                name bytes, data

CTranslate2 fuses the self-attention Q/K/V projections (and the cross-attention K/V) into one
matrix; whisper.cpp wants them apart and has no key bias (Whisper's key projection has none;
CTranslate2 stores zeros there, which we check and drop).
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from dvm.errors import DvmError
from dvm.harness import ct2
from dvm.harness.audio import SAMPLE_RATE

GGML_MAGIC = 0x67676D6C
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000
# ggml tensor types and whole-file types
TYPE_F32, TYPE_F16, TYPE_Q8_0 = 0, 1, 8
FTYPE = {"f32": 0, "f16": 1, "q8_0": 7}
QK8_0 = 32

N_FFT = 400


# ---------------------------------------------------------------------------- mel filter bank


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters, Slaney-normalised (area ~1): shape (n_mels, n_fft // 2 + 1), float32."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)


# ---------------------------------------------------------------------------- vocabulary


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest
    are shifted to code points from 256 upwards, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def token_bytes(tokens: list[str]) -> list[bytes]:
    decoder = _byte_decoder()
    out = []
    for token in tokens:
        try:
            out.append(bytes(decoder[ch] for ch in token))
        except KeyError:
            out.append(token.encode("utf-8"))
    return out


# whisper.cpp's own model files hold 50257 byte-level entries for English and multilingual models
# alike (for English the last one is <|endoftext|>, for multilingual models an empty token); the
# loader names every token after those itself (<|endoftext|>/[_SOT_]/languages/timestamps).
N_FILE_TOKENS = 50257


def file_tokens(vocabulary: list[str]) -> list[str]:
    """The vocabulary entries that go into the ggml file."""
    if "<|endoftext|>" not in vocabulary or len(vocabulary) < N_FILE_TOKENS:
        raise DvmError("vocabulary has no <|endoftext|> token or too few entries: not a Whisper vocabulary")
    return vocabulary[:N_FILE_TOKENS]


# ---------------------------------------------------------------------------- tensors


def quantize_q8_0(matrix: np.ndarray) -> bytes:
    """ggml's Q8_0: blocks of 32 values, each an fp16 scale then 32 int8 (round half away from 0)."""
    values = np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1, QK8_0)
    amax = np.abs(values).max(axis=1)
    scale = amax / 127.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    scaled = values * inverse[:, None]
    quants = np.trunc(scaled + np.copysign(0.5, scaled)).astype(np.int8)
    blocks = np.empty(values.shape[0], dtype=[("d", "<f2"), ("qs", "i1", QK8_0)])
    blocks["d"] = scale.astype(np.float16)
    blocks["qs"] = quants
    return blocks.tobytes()


def dequantize_q8_0(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    blocks = np.frombuffer(data, dtype=[("d", "<f2"), ("qs", "i1", QK8_0)])
    values = blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(shape)


# Tensors kept in f32 whatever the file type (whisper.cpp allocates them as F32).
_ALWAYS_F32 = ("encoder.positional_embedding", "decoder.positional_embedding")


def tensor_type(name: str, array: np.ndarray, quant: str) -> int:
    if array.ndim < 2 or name in _ALWAYS_F32 or name.endswith("conv1.bias") or name.endswith("conv2.bias"):
        return TYPE_F32
    if quant == "f32":
        return TYPE_F32
    if array.ndim == 2 and quant == "q8_0" and array.shape[-1] % QK8_0 == 0:
        return TYPE_Q8_0
    return TYPE_F16  # 2-D weights in f16 mode, and the 3-D conv kernels in every quantised mode


def _zero_key_bias(name: str, bias: np.ndarray) -> None:
    if np.any(bias.astype(np.float32) != 0):
        raise DvmError(f"{name}: CTranslate2 key bias is not zero; Whisper has no key bias, refusing to drop it")


def whisper_tensors(model: ct2.CT2Model):
    """Yield (ggml name, numpy array) in whisper.cpp's naming, splitting CTranslate2's fused projections."""
    get = model.get
    state = get("encoder/conv1/weight").shape[0]

    yield "encoder.positional_embedding", get("encoder/position_encodings/encodings")
    yield "encoder.conv1.weight", get("encoder/conv1/weight")
    yield "encoder.conv1.bias", get("encoder/conv1/bias").reshape(state, 1)
    yield "encoder.conv2.weight", get("encoder/conv2/weight")
    yield "encoder.conv2.bias", get("encoder/conv2/bias").reshape(state, 1)
    for i in range(model.count_layers("encoder")):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from _self_attention(model, f"{src}/self_attention", f"{dst}.attn", f"{dst}.attn_ln", state)
        yield from _ffn(model, f"{src}/ffn", dst)
    yield "encoder.ln_post.weight", get("encoder/layer_norm/gamma")
    yield "encoder.ln_post.bias", get("encoder/layer_norm/beta")

    yield "decoder.positional_embedding", get("decoder/position_encodings/encodings")
    yield "decoder.token_embedding.weight", get("decoder/embeddings/weight")
    for i in range(model.count_layers("decoder")):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from _self_attention(model, f"{src}/self_attention", f"{dst}.attn", f"{dst}.attn_ln", state)
        # cross-attention: linear_0 = query, linear_1 = fused key/value, linear_2 = output
        cross, out = f"{src}/attention", f"{dst}.cross_attn"
        yield f"{dst}.cross_attn_ln.weight", get(f"{cross}/layer_norm/gamma")
        yield f"{dst}.cross_attn_ln.bias", get(f"{cross}/layer_norm/beta")
        yield f"{out}.query.weight", get(f"{cross}/linear_0/weight")
        yield f"{out}.query.bias", get(f"{cross}/linear_0/bias")
        kv_w, kv_b = get(f"{cross}/linear_1/weight"), get(f"{cross}/linear_1/bias")
        _zero_key_bias(f"{cross}/linear_1/bias", kv_b[:state])
        yield f"{out}.key.weight", kv_w[:state]
        yield f"{out}.value.weight", kv_w[state:]
        yield f"{out}.value.bias", kv_b[state:]
        yield f"{out}.out.weight", get(f"{cross}/linear_2/weight")
        yield f"{out}.out.bias", get(f"{cross}/linear_2/bias")
        yield from _ffn(model, f"{src}/ffn", dst)
    yield "decoder.ln.weight", get("decoder/layer_norm/gamma")
    yield "decoder.ln.bias", get("decoder/layer_norm/beta")


def _self_attention(model, src: str, out: str, ln: str, state: int):
    get = model.get
    yield f"{ln}.weight", get(f"{src}/layer_norm/gamma")
    yield f"{ln}.bias", get(f"{src}/layer_norm/beta")
    qkv_w, qkv_b = get(f"{src}/linear_0/weight"), get(f"{src}/linear_0/bias")
    if qkv_w.shape[0] != 3 * state:
        raise DvmError(f"{src}/linear_0: expected a fused Q/K/V of {3 * state} rows, found {qkv_w.shape[0]}")
    _zero_key_bias(f"{src}/linear_0/bias", qkv_b[state : 2 * state])
    yield f"{out}.query.weight", qkv_w[:state]
    yield f"{out}.query.bias", qkv_b[:state]
    yield f"{out}.key.weight", qkv_w[state : 2 * state]
    yield f"{out}.value.weight", qkv_w[2 * state :]
    yield f"{out}.value.bias", qkv_b[2 * state :]
    yield f"{out}.out.weight", get(f"{src}/linear_1/weight")
    yield f"{out}.out.bias", get(f"{src}/linear_1/bias")


def _ffn(model, src: str, dst: str):
    get = model.get
    yield f"{dst}.mlp_ln.weight", get(f"{src}/layer_norm/gamma")
    yield f"{dst}.mlp_ln.bias", get(f"{src}/layer_norm/beta")
    yield f"{dst}.mlp.0.weight", get(f"{src}/linear_0/weight")
    yield f"{dst}.mlp.0.bias", get(f"{src}/linear_0/bias")
    yield f"{dst}.mlp.2.weight", get(f"{src}/linear_1/weight")
    yield f"{dst}.mlp.2.bias", get(f"{src}/linear_1/bias")


def hparams(model: ct2.CT2Model) -> dict[str, int]:
    get = model.get
    audio_ctx, audio_state = get("encoder/position_encodings/encodings").shape
    text_ctx, text_state = get("decoder/position_encodings/encodings").shape
    return {
        "n_vocab": get("decoder/embeddings/weight").shape[0],
        "n_audio_ctx": audio_ctx,
        "n_audio_state": audio_state,
        "n_audio_head": model.scalar("encoder/num_heads"),
        "n_audio_layer": model.count_layers("encoder"),
        "n_text_ctx": text_ctx,
        "n_text_state": text_state,
        "n_text_head": model.scalar("decoder/num_heads"),
        "n_text_layer": model.count_layers("decoder"),
        "n_mels": get("encoder/conv1/weight").shape[1],
    }


# ---------------------------------------------------------------------------- writer


@dataclass
class ConversionReport:
    output: Path
    hparams: dict[str, int]
    quant: str
    n_tensors: int
    n_tokens: int
    seconds: float
    bytes_written: int


def _write_tensor(out: BinaryIO, name: str, array: np.ndarray, ttype: int) -> None:
    encoded = name.encode("utf-8")
    shape = array.shape
    out.write(struct.pack("<iii", len(shape), len(encoded), ttype))
    out.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))
    out.write(encoded)
    if ttype == TYPE_F32:
        out.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
    elif ttype == TYPE_F16:
        out.write(np.ascontiguousarray(array, dtype="<f2").tobytes())
    else:
        out.write(quantize_q8_0(array))


def convert(
    source: str | Path,
    output: str | Path,
    quant: str = "f16",
    progress: Callable[[int, int], None] | None = None,
) -> ConversionReport:
    """Convert the CTranslate2 model directory ``source`` into the ggml file ``output``.

    The file is written under a temporary name and renamed into place, so a failure leaves nothing.
    """
    if quant not in FTYPE:
        raise DvmError(f"unknown quantisation {quant!r}; choose one of {', '.join(FTYPE)}")
    started = time.perf_counter()
    model = ct2.load(source)
    params = hparams(model)
    tokens = token_bytes(file_tokens(model.vocabulary))
    filters = mel_filters(params["n_mels"])
    ftype = FTYPE[quant] + (GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR if quant == "q8_0" else 0)
    tensors = list(whisper_tensors(model))

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as out:
            out.write(struct.pack("<I", GGML_MAGIC))
            out.write(struct.pack("<11i", *params.values(), ftype))
            out.write(struct.pack("<ii", *filters.shape))
            out.write(filters.astype("<f4").tobytes())
            out.write(struct.pack("<i", len(tokens)))
            for token in tokens:
                out.write(struct.pack("<I", len(token)))
                out.write(token)
            for index, (name, array) in enumerate(tensors, 1):
                _write_tensor(out, name, array, tensor_type(name, array, quant))
                if progress:
                    progress(index, len(tensors))
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ConversionReport(
        output=output,
        hparams=params,
        quant=quant,
        n_tensors=len(tensors),
        n_tokens=len(tokens),
        seconds=time.perf_counter() - started,
        bytes_written=output.stat().st_size,
    )
