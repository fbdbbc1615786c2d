"""Reading CTranslate2 Whisper model directories (``model.bin`` + ``config.json`` + vocabulary).

The binary layout (CTranslate2 binary version 6, little-endian):

    uint32 binary_version
    string spec_name, uint32 spec_revision
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 n_bytes, bytes data
    uint32 n_aliases, then per alias: string alias, string target

where ``string`` is a uint16 length (including a trailing NUL) followed by the bytes.
Some packages ship ``model.bin`` split into ``model.bin.part1``, ``model.bin.part2``, ...:
those parts are concatenated in order.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dvm.errors import DvmError

# Order of CTranslate2's DataType enum.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


@dataclass
class CT2Model:
    """The variables of a CTranslate2 model, as numpy arrays (views into a memory map)."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    vocabulary: list[str] = field(default_factory=list)

    def get(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise DvmError(f"CTranslate2 model has no variable {name!r}") from None

    def scalar(self, name: str) -> int:
        return int(self.get(name).reshape(-1)[0])

    def count_layers(self, prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in self.variables:
            n += 1
        return n


def model_parts(directory: Path) -> list[Path]:
    """The file(s) holding model.bin: the file itself or its numbered parts, in order."""
    single = directory / "model.bin"
    if single.is_file():
        return [single]
    parts = sorted(directory.glob("model.bin.part*"), key=lambda p: int(p.suffix.removeprefix(".part") or 0))
    return parts


def _read_binary(buffer) -> tuple[str, int, int, dict, dict, dict]:
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, buffer, offset)
        offset += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def take_string() -> str:
        nonlocal offset
        length = take("H")
        text = bytes(buffer[offset : offset + length - 1]).decode("utf-8")
        offset += length
        return text

    version = take("I")
    if not 5 <= version <= 6:
        raise DvmError(f"unsupported CTranslate2 binary version {version} (this reader knows 5 and 6)")
    spec = take_string()
    revision = take("I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(take("I")):
        name = take_string()
        rank = take("B")
        dims = [take("I") for _ in range(rank)]
        type_id = take("B")
        n_bytes = take("I")
        if type_id not in _DTYPES:
            raise DvmError(f"variable {name!r} has type {_DTYPE_NAMES.get(type_id, type_id)}, which is not supported")
        array = np.frombuffer(buffer, dtype=_DTYPES[type_id], count=n_bytes // np.dtype(_DTYPES[type_id]).itemsize, offset=offset)
        variables[name] = array.reshape(dims) if dims else array
        dtypes[name] = _DTYPE_NAMES[type_id]
        offset += n_bytes
    aliases = {}
    for _ in range(take("I")):
        alias = take_string()
        aliases[alias] = take_string()
    return spec, revision, version, variables, dtypes, aliases


def load(directory: str | Path) -> CT2Model:
    """Load a CTranslate2 Whisper model directory. Raises DvmError with a one-line reason."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DvmError(f"{directory}: not a directory (expected a CTranslate2 model directory)")
    parts = model_parts(directory)
    if not parts:
        raise DvmError(f"{directory}: no model.bin (or model.bin.part1, ...) found")
    try:
        if len(parts) == 1:
            with open(parts[0], "rb") as handle:
                buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        else:
            buffer = b"".join(part.read_bytes() for part in parts)
        spec, revision, version, variables, dtypes, aliases = _read_binary(buffer)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise DvmError(f"{directory}: model.bin is truncated or corrupt ({exc})") from None
    if spec != "WhisperSpec":
        raise DvmError(f"{directory}: holds a {spec}, not a Whisper model")
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    vocab_file = directory / "vocabulary.txt"
    if not vocab_file.is_file():
        raise DvmError(f"{directory}: vocabulary.txt is missing")
    vocabulary = vocab_file.read_text(encoding="utf-8").split("\n")
    if vocabulary and vocabulary[-1] == "":
        vocabulary.pop()
    return CT2Model(spec, revision, version, variables, dtypes, aliases, config, vocabulary)
