"""Voice activity detection: Silero VAD v6 (the ONNX file faster-whisper ships), run in a streaming way.

The model looks at 512-sample windows (32 ms at 16 kHz) with the previous 64 samples as context and
carries an LSTM state between windows; it returns the probability that the window holds speech.
One ``StreamingVad`` per speaker keeps that state.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

WINDOW = 512
CONTEXT = 64


def model_path() -> Path:
    import faster_whisper  # noqa: PLC0415 - heavy runtime, loaded on first use

    path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    if not path.exists():
        raise FileNotFoundError(f"Silero VAD model not found at {path} (faster-whisper >= 1.2 ships it)")
    return path


@lru_cache(maxsize=1)
def _session():
    import onnxruntime  # noqa: PLC0415 - heavy runtime, loaded on first use

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"], sess_options=options)




class StreamingVad:
    """Feed 16 kHz mono float32 in any chunk size; get one speech probability per 32 ms window."""

    def __init__(self):
        self.session = _session()
        self.state_h = np.zeros((1, 1, 128), dtype=np.float32)
        self.state_c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.pending = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        self.__init__()

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every complete window now available (possibly none)."""
        buffer = np.concatenate([self.pending, samples.astype(np.float32, copy=False)])
        n = buffer.size // WINDOW
        self.pending = buffer[n * WINDOW:]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = buffer[: n * WINDOW].reshape(n, WINDOW)
        probs = np.empty(n, dtype=np.float32)
        for i in range(n):
            x = np.concatenate([self.context, windows[i]])[None, :]
            out, self.state_h, self.state_c = self.session.run(None, {"input": x, "h": self.state_h, "c": self.state_c})
            probs[i] = float(np.asarray(out).reshape(-1)[0])
            self.context = windows[i][-CONTEXT:]
        return probs
