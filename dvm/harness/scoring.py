"""Accuracy: word and character error rates, and a hallucination measure for silent clips.

Both texts go through Whisper's own normaliser before they are compared (English: numbers,
spelling, contractions, punctuation and case; other languages: the basic normaliser, which
only folds case, punctuation and symbols and keeps diacritics), so a transcript is not
penalised for writing "$25" where the reference says "twenty-five dollars".

A reference of ``None`` means "timed but not scored"; an empty reference means "expected
silence": there is no WER, but every word the model writes is a hallucination, reported as
words per second of audio (``hallucination_wps``).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import jiwer

__all__ = ["normalize", "score", "aggregate"]

_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=None)
def _normalizer(family: str):
    if family == "en":
        from whisper_normalizer.english import EnglishTextNormalizer  # noqa: PLC0415 - loaded on first score

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer  # noqa: PLC0415 - loaded on first score

    return BasicTextNormalizer()


def _family(language: str | None) -> str:
    """``"en"``, ``"en-US"``, ``"English"`` -> ``"en"``; anything else (or nothing) -> ``"basic"``."""
    lang = (language or "").strip().lower().replace("_", "-")
    return "en" if lang.split("-")[0] in ("en", "english") else "basic"


def normalize(text: str, language: str = "en") -> str:
    """The text as it is compared: Whisper-normalised, single spaces, no ends."""
    return _SPACES.sub(" ", _normalizer(_family(language))(text or "")).strip()


def score(reference: str | None, hypothesis: str | None, language: str = "en", seconds: float | None = None) -> dict[str, Any]:
    """Compare one transcript with its reference.

    Returns ``wer``, ``cer`` (both on normalised text; None when there is nothing to score),
    ``ref_words``, ``hyp_words``, the edit counts ``substitutions``, ``deletions``,
    ``insertions`` (for pooled WER, see :func:`aggregate`) and ``hallucination_wps``:
    hypothesis words per second of audio, set only for an expected-silence clip (empty
    reference; needs ``seconds``).
    """
    hyp = normalize(hypothesis or "", language)
    hyp_words = len(hyp.split())
    result: dict[str, Any] = {
        "wer": None,
        "cer": None,
        "ref_words": None,
        "hyp_words": hyp_words,
        "substitutions": None,
        "deletions": None,
        "insertions": None,
        "hallucination_wps": None,
    }
    if reference is None:  # timed but not scored
        return result
    ref = normalize(reference, language)
    ref_words = len(ref.split())
    result["ref_words"] = ref_words
    if ref_words == 0:  # expected silence: every word is made up
        result["insertions"] = hyp_words
        if seconds is not None and seconds > 0:
            result["hallucination_wps"] = hyp_words / seconds
        return result
    if hyp_words == 0:  # nothing heard: every reference word deleted
        result.update(wer=1.0, cer=1.0, substitutions=0, deletions=ref_words, insertions=0)
        return result
    words = jiwer.process_words(ref, hyp)
    result.update(
        wer=float(words.wer),
        cer=float(jiwer.cer(ref, hyp)),
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
    )
    return result


def aggregate(scores: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Summarise per-clip scores (as returned by :func:`score`).

    ``median_wer`` and ``mean_wer`` over the scored clips; ``pooled_wer`` = all edits over all
    reference words (long clips weigh more); ``median_cer``; ``max_hallucination_wps`` and
    ``hallucinated_words`` over the expected-silence clips. Values are None when no clip of
    that sort is present.
    """
    scores = list(scores)
    scored = [s for s in scores if s.get("wer") is not None]
    silent = [s for s in scores if s.get("hallucination_wps") is not None]
    wers = [float(s["wer"]) for s in scored]
    cers = [float(s["cer"]) for s in scored if s.get("cer") is not None]
    ref_total = sum(int(s.get("ref_words") or 0) for s in scored)
    edits = sum(int(s.get(k) or 0) for s in scored for k in ("substitutions", "deletions", "insertions"))
    return {
        "clips": len(scores),
        "clips_scored": len(scored),
        "clips_silent": len(silent),
        "median_wer": statistics.median(wers) if wers else None,
        "mean_wer": statistics.fmean(wers) if wers else None,
        "pooled_wer": edits / ref_total if ref_total else None,
        "median_cer": statistics.median(cers) if cers else None,
        "max_hallucination_wps": max(s["hallucination_wps"] for s in silent) if silent else None,
        "hallucinated_words": sum(int(s.get("hyp_words") or 0) for s in silent) if silent else None,
    }
