"""Live captions: the pieces the pipeline uses to show text while people talk and to end an
utterance as soon as it is clearly over.

- A *speculation* is a decode of an utterance started at a short pause (``speculative_pause_ms``).
  If the speaker stays quiet, its text becomes the final line without a second decode; if speech
  resumes first, it is wasted.
- *Adaptive endpointing*: when the speculative text ends a sentence, the utterance ends after
  ``early_endpoint_ms`` of quiet instead of the full ``silence_timeout_ms``.
- An *interim* is a decode of the speech so far, every ``interim_interval_ms`` once a speaker has
  talked for ``interim_after_ms``; published to the live transcript resource marked as interim,
  never stored, replaced by the final line. Interims run only when no final or speculative decode
  is waiting, one at a time, and are discarded when their utterance has ended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# A sentence that ends in one of these words is probably not over ("... and", "... because").
_TRAILING = {
    "and", "but", "or", "so", "because", "if", "then", "that", "which", "who", "when", "while", "although",
    "though", "the", "a", "an", "to", "of", "for", "with", "in", "on", "at", "my", "your", "our", "their",
    "is", "are", "was", "were", "um", "uh", "like",
}
# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "no", "approx"}
_FINAL = re.compile(r"[.!?…。！？]['\")\]]*$")


def sentence_final(text: str) -> bool:
    """Whether ``text`` reads as a finished sentence: final punctuation, not after an abbreviation,
    and not ending on a conjunction, article or filler."""
    text = (text or "").strip()
    if not text or not _FINAL.search(text) or text.endswith("..."):
        return False
    words = re.findall(r"[\w'.]+", text.lower())
    if not words:
        return False
    last = words[-1].rstrip(".")
    return last not in _ABBREVIATIONS and last not in _TRAILING


@dataclass
class Speculation:
    """One speculative decode of a speaker's utterance, from its first sample to ``voiced`` windows."""

    key: tuple[str, str]
    seq: int  # the utterance it belongs to
    voiced: int  # VAD windows of speech it covers (the utterance's audio up to the last voiced window)
    pcm: np.ndarray
    text: str | None = None
    done: bool = False
    stale: bool = False  # speech resumed (or the utterance was dropped): the result will not be used
    utterance: object | None = None  # set when the utterance ended before the decode finished


@dataclass
class InterimRequest:
    key: tuple[str, str]
    seq: int
    pcm: np.ndarray
    speech_started_wall: float


@dataclass
class Interim:
    """The latest interim hypothesis of one speaker's utterance in progress."""

    session_id: str
    speaker_id: str
    speaker_name: str
    seq: int
    start: float
    text: str
    at: float
    interim: bool = field(default=True)

    def as_dict(self) -> dict:
        return {"session_id": self.session_id, "speaker_id": self.speaker_id, "speaker_name": self.speaker_name,
                "start": round(self.start, 3), "text": self.text, "interim": True}
