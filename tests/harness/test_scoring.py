"""WER/CER against hand-counted edits, the Whisper normaliser, the hallucination measure."""

from __future__ import annotations

import pytest

from dvm.harness.scoring import aggregate, normalize, score


# ------------------------------------------------------------------ normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),  # case and punctuation
        ("  spaced   out\n text ", "spaced out text"),  # whitespace collapses
        ("Twenty-five dollars", "$25"),  # spoken numbers and currency become digits
        ("It costs $25.", "it costs $25"),
        ("one hundred and two", "102"),
        ("Mr. Smith", "mister smith"),  # titles expand
        ("It's my favourite colour", "it is my favorite color"),  # contractions, British spelling
        ("[laughs] okay (inaudible)", "okay"),  # bracketed annotations vanish
        ("", ""),
    ],
)
def test_english_normaliser(text, expected):
    assert normalize(text, "en") == expected


def test_english_normaliser_is_chosen_for_english_spellings():
    assert normalize("Twenty-five", "en-US") == "25"
    assert normalize("Twenty-five", "English") == "25"


def test_other_languages_use_the_basic_normaliser_and_keep_diacritics():
    assert normalize("Grüße aus München, sagte sie!", "de") == "grüße aus münchen sagte sie"
    # the basic normaliser does not spell numbers: "zwanzig" stays a word
    assert normalize("Zwanzig Uhr", "de") == "zwanzig uhr"


# ------------------------------------------------------------------ score: WER


def test_identical_texts_score_zero():
    result = score("The cat sat on the mat.", "the cat sat on the mat", "en", 3.0)
    assert result["wer"] == 0.0
    assert result["cer"] == 0.0
    assert result["ref_words"] == result["hyp_words"] == 6
    assert result["hallucination_wps"] is None


def test_one_substitution_in_six_words():
    result = score("the cat sat on the mat", "the cat sat on a mat", "en")
    assert result["wer"] == pytest.approx(1 / 6)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (1, 0, 0)


def test_one_deletion_in_six_words():
    result = score("the cat sat on the mat", "the cat sat on mat", "en")
    assert result["wer"] == pytest.approx(1 / 6)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (0, 1, 0)


def test_one_insertion_in_two_words():
    result = score("hello world", "hello big world", "en")
    assert result["wer"] == pytest.approx(0.5)
    assert result["insertions"] == 1


def test_deletion_plus_insertion_beats_three_substitutions():
    # alpha beta gamma delta -> alpha gamma delta epsilon: drop "beta", add "epsilon" = 2 edits / 4 words
    result = score("alpha beta gamma delta", "alpha gamma delta epsilon", "en")
    assert result["wer"] == pytest.approx(0.5)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (0, 1, 1)


def test_wer_can_exceed_one():
    result = score("yes", "no no no", "en")
    assert result["wer"] == pytest.approx(3.0)  # one substitution + two insertions over one word


def test_normalisation_happens_before_scoring():
    reference = "Mr. Smith paid twenty-five dollars for his favourite colour."
    hypothesis = "mister smith paid $25 for his favorite color"
    assert score(reference, hypothesis, "en")["wer"] == 0.0


def test_jfk_with_one_wrong_word():
    reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    hypothesis = "And so, my fellow America, ask not what your country can do for you, ask what you can do for your country."
    result = score(reference, hypothesis, "en", 11.0)
    assert result["ref_words"] == 22
    assert result["wer"] == pytest.approx(1 / 22)


def test_cer_counts_characters_of_normalised_text():
    # "hello world" is 11 characters; one is wrong
    result = score("Hello world!", "hallo world", "en")
    assert result["cer"] == pytest.approx(1 / 11)
    assert result["wer"] == pytest.approx(0.5)


def test_german_umlauts_count():
    result = score("Grüße aus München", "Grüsse aus München", "de")
    assert result["wer"] == pytest.approx(1 / 3)


def test_empty_hypothesis_deletes_everything():
    result = score("one small step", "", "en", 2.0)
    assert result["wer"] == 1.0
    assert result["cer"] == 1.0
    assert result["deletions"] == 3
    assert result["hyp_words"] == 0


# ------------------------------------------------------------------ score: silence and unscored


def test_expected_silence_reports_hallucination_rate():
    result = score("", "Thank you.", "en", 10.0)
    assert result["wer"] is None
    assert result["cer"] is None
    assert result["ref_words"] == 0
    assert result["hyp_words"] == 2
    assert result["hallucination_wps"] == pytest.approx(0.2)


def test_expected_silence_with_silent_output_is_zero():
    assert score("", "", "en", 10.0)["hallucination_wps"] == 0.0
    # punctuation alone is not a word
    assert score("", " . . . ", "en", 10.0)["hallucination_wps"] == 0.0


def test_expected_silence_without_duration_has_no_rate():
    result = score("", "you", "en")
    assert result["hallucination_wps"] is None
    assert result["hyp_words"] == 1


def test_unscored_clip_has_no_figures():
    result = score(None, "whatever was said", "en", 5.0)
    assert result["wer"] is None and result["cer"] is None
    assert result["ref_words"] is None
    assert result["hyp_words"] == 3
    assert result["hallucination_wps"] is None


# ------------------------------------------------------------------ aggregate


def test_aggregate_median_mean_and_pooled():
    scores = [
        score("a b c d", "a b c d", "en"),  # 0 edits / 4
        score("the cat sat on the mat", "the cat sat on a mat", "en"),  # 1 / 6
        score("hello world", "hello big world", "en"),  # 1 / 2
        score("", "you", "en", 10.0),  # silence: 0.1 wps
        score(None, "anything", "en", 10.0),  # not scored
    ]
    summary = aggregate(scores)
    assert summary["clips"] == 5
    assert summary["clips_scored"] == 3
    assert summary["clips_silent"] == 1
    assert summary["median_wer"] == pytest.approx(1 / 6)
    assert summary["mean_wer"] == pytest.approx((0 + 1 / 6 + 0.5) / 3)
    assert summary["pooled_wer"] == pytest.approx(2 / 12)
    assert summary["max_hallucination_wps"] == pytest.approx(0.1)
    assert summary["hallucinated_words"] == 1


def test_aggregate_of_nothing():
    summary = aggregate([])
    assert summary["clips"] == 0
    assert summary["median_wer"] is None
    assert summary["pooled_wer"] is None
    assert summary["max_hallucination_wps"] is None
