"""Answer metrics pinned on hand-worked fixtures (the arithmetic is in the comments), BLEU cross-checked with NLTK."""

from __future__ import annotations

import math
import random

import numpy as np
import numpy.typing as npt
import pytest

from eval.answer_metrics import (
    AbstentionMetrics,
    CitationCheck,
    abstention_metrics,
    bleu,
    citation_correctness,
    exact_match,
    groundedness_embedding,
    groundedness_lexical,
    lexical_support,
    normalize_answer,
    rouge_l,
    semantic_similarity,
    sentence_split,
    strip_citations,
    token_f1,
)

# --------------------------------------------------------------------------- normalisation, EM, F1


def test_normalize_answer_follows_squad() -> None:
    # lowercase -> drop punctuation ("Don't" -> "dont", "1,000" -> "1000") -> drop articles -> collapse spaces.
    assert normalize_answer("  The Cat's  hat, an APPLE!  ") == "cats hat apple"
    assert normalize_answer("Don't pay 1,000 dollars.") == "dont pay 1000 dollars"
    # Articles only as whole words: "theme" and "banana" keep their letters.
    assert normalize_answer("A theme, a banana") == "theme banana"
    assert normalize_answer("The. A. An.") == ""


def test_exact_match_takes_best_reference() -> None:
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["eiffel tower", "Louvre"]) == 0.0
    assert exact_match("louvre", ["eiffel tower", "The Louvre."]) == 1.0
    assert exact_match("louvre", "The Louvre") == 1.0  # one reference may be given as a plain string


def test_empty_prediction_and_reference_follow_squad2() -> None:
    # Both empty -> 1; one side empty -> 0. No references at all is scored against "" (SQuAD 2.0 script).
    for metric in (exact_match, token_f1, rouge_l, bleu):
        assert metric("", [""]) == 1.0, metric.__name__
        assert metric("", []) == 1.0, metric.__name__
        assert metric("", ["Paris"]) == 0.0, metric.__name__
        assert metric("Paris", [""]) == 0.0, metric.__name__
        # "The." normalises to nothing, so it counts as an empty prediction.
        assert metric("The.", ["", "Paris"]) == 1.0, metric.__name__


def test_token_f1_hand_worked() -> None:
    # [cat, sat] vs [cat, sat, down]: overlap 2, P = 2/2, R = 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8.
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    # Counts are clipped: [cat, cat, cat] vs [cat, dog]: overlap min(3, 1) = 1, P = 1/3, R = 1/2, F1 = 0.4.
    assert token_f1("cat cat cat", ["cat dog"]) == pytest.approx(0.4)
    # Best of two references: 0 against "dog", 0.8 against the second.
    assert token_f1("the cat sat", ["dog", "cat sat down"]) == pytest.approx(0.8)
    assert token_f1("cat", ["dog"]) == 0.0


# --------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_hand_worked() -> None:
    # pred [police, killed, gunman] vs ref [police, kill, gunman]: LCS [police, gunman] = 2,
    # P = 2/3, R = 2/3, F1 = 2/3.
    assert rouge_l("police killed the gunman", ["police kill the gunman"]) == pytest.approx(2 / 3)
    # Order matters (unlike token F1): pred [q, p] vs ref [p, q, r] has LCS 1 (either p or q),
    # P = 1/2, R = 1/3, F1 = 2 * (1/6) / (5/6) = 0.4, while token F1 sees overlap 2: P = 1, R = 2/3, F1 = 0.8.
    assert rouge_l("q p", ["p q r"]) == pytest.approx(0.4)
    assert token_f1("q p", ["p q r"]) == pytest.approx(0.8)
    # LCS skips gaps: pred [x, p, y, q, z, r] vs ref [p, q, r]: LCS 3, P = 3/6, R = 1, F1 = 2/3.
    assert rouge_l("x p y q z r", ["p q r"]) == pytest.approx(2 / 3)
    # Articles are dropped before matching: "a" is not a token, so [q, r] vs [p, q, r]: LCS 2, P 1, R 2/3, F1 0.8.
    assert rouge_l("a q r", ["p q r"]) == pytest.approx(0.8)
    # Max over references.
    assert rouge_l("p q r", ["x", "p q r"]) == 1.0


# --------------------------------------------------------------------------- BLEU


def test_bleu_identical_is_one() -> None:
    assert bleu("the quick brown fox jumps", ["The quick brown fox jumps."]) == pytest.approx(1.0)


def test_bleu_hand_worked_with_smoothing_and_brevity() -> None:
    # pred [cat, sat, on, mat] (4 tokens; "the" dropped) vs ref [cat, sat, on, red, mat] (5 tokens).
    # 1-grams: 4/4 match. 2-grams (cat sat, sat on, on mat): cat sat, sat on match -> 2/3.
    # 3-grams (cat sat on, sat on mat): cat sat on -> 1/2. 4-grams (cat sat on mat): 0/1 -> method 1 gives 0.1/1.
    # Geometric mean = (1 * 2/3 * 1/2 * 0.1) ** (1/4) = (1/30) ** 0.25 = 0.42728.
    # Brevity: c = 4 < r = 5 -> BP = exp(1 - 5/4) = 0.77880. BLEU = 0.77880 * 0.42728 = 0.33277.
    expected = math.exp(1 - 5 / 4) * (1 / 30) ** 0.25
    assert bleu("the cat sat on the mat", ["the cat sat on the red mat"]) == pytest.approx(expected)
    assert expected == pytest.approx(0.33277, abs=1e-5)


def test_bleu_clips_by_the_best_single_reference() -> None:
    # pred [cat, cat] with max_n=1. Ref A has "cat" once, ref B twice: the clip is max(1, 2) = 2, so 2/2 match.
    # Closest reference length to 2: A has 1, B has 2 -> r = 2, BP = 1. BLEU-1 = 1.0.
    assert bleu("cat cat", ["cat", "cat cat"], max_n=1) == pytest.approx(1.0)
    # With only ref A, the clip is 1: P1 = 1/2, r = 1 < c = 2 so BP = 1, BLEU-1 = 0.5.
    assert bleu("cat cat", ["cat"], max_n=1) == pytest.approx(0.5)
    # Equal distance to lengths 1 and 3 -> the shorter wins (r = 1), so no brevity penalty.
    assert bleu("cat cat", ["cat", "cat dog fish"], max_n=1) == pytest.approx(0.5)


def test_bleu_no_unigram_match_is_zero_and_bad_max_n_fails() -> None:
    assert bleu("dog", ["cat sat"]) == 0.0
    with pytest.raises(ValueError, match="max_n"):
        bleu("cat", ["cat"], max_n=0)


def test_bleu_matches_nltk_method1() -> None:
    bleu_score = pytest.importorskip("nltk.translate.bleu_score", reason="nltk not installed; cross-check skipped")
    smoothing = bleu_score.SmoothingFunction().method1
    rng = random.Random(0)
    vocabulary = ["cat", "sat", "on", "mat", "dog", "ran", "fast", "red"]
    for _ in range(300):
        prediction = rng.choices(vocabulary, k=rng.randint(1, 9))
        references = [rng.choices(vocabulary, k=rng.randint(1, 9)) for _ in range(rng.randint(1, 3))]
        expected = bleu_score.sentence_bleu(references, prediction, smoothing_function=smoothing)
        assert bleu(" ".join(prediction), [" ".join(r) for r in references]) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- abstention


def test_abstention_metrics_hand_worked() -> None:
    refused = [True, True, False, False, True, False]
    unanswerable = [True, False, True, False, True, False]
    # q0 tp, q1 fp, q2 fn, q3 tn, q4 tp, q5 tn -> tp 2, fp 1, fn 1, tn 2.
    # precision 2/3, recall 2/3, F1 = 4 / (4 + 1 + 1) = 2/3, wrong refusals 1 / (1 + 2) = 1/3.
    result = abstention_metrics(refused, unanswerable)
    assert (result.tp, result.fp, result.fn, result.tn) == (2, 1, 1, 2)
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(2 / 3)
    assert result.wrong_refusal_rate == pytest.approx(1 / 3)


def test_abstention_zero_denominators_are_none() -> None:
    # Never refuses, one unanswerable question: precision undefined (None), recall 0, F1 = 0 / (0 + 0 + 1) = 0.
    never = abstention_metrics([False, False], [True, False])
    assert never == AbstentionMetrics(
        tp=0, fp=0, fn=1, tn=1, precision=None, recall=0.0, f1=0.0, wrong_refusal_rate=0.0
    )
    # Only answerable questions, one refused: recall has nothing to measure (None), but the wrong refusal makes
    # precision 0/1 = 0 and F1 = 0 / (0 + 1 + 0) = 0; wrong refusals 1/2.
    answerable_only = abstention_metrics([True, False], [False, False])
    assert answerable_only.recall is None
    assert (answerable_only.precision, answerable_only.f1, answerable_only.wrong_refusal_rate) == (0.0, 0.0, 0.5)
    # Only answerable questions, all answered: tp = fp = fn = 0, so precision, recall and F1 are all None.
    all_answered = abstention_metrics([False, False], [False, False])
    assert (all_answered.precision, all_answered.recall, all_answered.f1) == (None, None, None)
    assert all_answered.wrong_refusal_rate == 0.0
    empty = abstention_metrics([], [])
    assert (empty.precision, empty.recall, empty.f1, empty.wrong_refusal_rate) == (None, None, None, None)


def test_abstention_length_mismatch_fails() -> None:
    with pytest.raises(ValueError, match="2 values but unanswerable has 1"):
        abstention_metrics([True, False], [True])


# --------------------------------------------------------------------------- sentences and groundedness


def test_sentence_split() -> None:
    text = (
        "Dr. Smith met J. K. Rowling in the U.S. Then he left! Was it 3.5 km? Yes, e.g. by car.\n"
        '- a bullet without a stop\n"Quoted." (Aside.) No. It ended in 1815 . Done'
    )
    assert sentence_split(text) == [
        "Dr. Smith met J. K. Rowling in the U.S. Then he left!",  # abbreviation, initials, dotted "U.S." kept
        "Was it 3.5 km?",
        "Yes, e.g. by car.",
        "- a bullet without a stop",  # a line break ends a sentence
        '"Quoted."',
        "(Aside.)",
        "No.",  # a one-word answer is a sentence, not an abbreviation
        "It ended in 1815 .",  # ClapNQ's tokenised text puts a space before the dot
        "Done",
    ]
    assert sentence_split("  \n ") == []


PASSAGES = [
    "The Eiffel Tower was completed in 1889 in Paris.",
    "Gustave Eiffel's company designed and built the tower.",
]


def test_lexical_support_uses_best_single_passage() -> None:
    # Content tokens of "The tower was completed in 1889 by Gustave Eiffel." after dropping the, was, in, by:
    # {tower, completed, 1889, gustave, eiffel} (5). Passage 1 has tower, completed, 1889, eiffel -> 4/5.
    # Passage 2 has gustave, tower (and "eiffels", not "eiffel") -> 2/5. Best single passage: 0.8.
    # The union would cover 5/5; scoring the union would credit a claim that no one passage makes.
    assert lexical_support("The tower was completed in 1889 by Gustave Eiffel.", PASSAGES) == pytest.approx(0.8)
    assert lexical_support("It was in there.", PASSAGES) == 1.0  # only stopwords: nothing to check
    assert lexical_support("Paris", []) == 0.0


def test_groundedness_lexical() -> None:
    answer = "The tower was completed in 1889. It is painted bright green every winter."
    # Sentence 1: {tower, completed, 1889} all in passage 1 -> 1.0.
    # Sentence 2: {painted, bright, green, every, winter} none in either passage -> 0.0. Share >= 0.5: 1 of 2.
    share, scores = groundedness_lexical(answer, PASSAGES)
    assert scores == pytest.approx([1.0, 0.0])
    assert share == 0.5
    # Threshold 0 counts every sentence; the empty answer claims nothing.
    assert groundedness_lexical(answer, PASSAGES, threshold=0.0)[0] == 1.0
    assert groundedness_lexical("", PASSAGES) == (1.0, [])


VOCABULARY = ["tower", "paris", "built", "1889", "green", "cheese"]


def fake_embed(texts: list[str]) -> npt.NDArray[np.float64]:
    """Bag of words over a fixed vocabulary: deterministic, and cosines can be worked out by hand."""
    vectors = np.zeros((len(texts), len(VOCABULARY)))
    for row, text in enumerate(texts):
        for token in normalize_answer(text).split():
            if token in VOCABULARY:
                vectors[row, VOCABULARY.index(token)] += 1
    return vectors


def test_groundedness_embedding_with_fake_embedder() -> None:
    passages = ["The tower is in Paris. It was built in 1889."]
    # Passage sentences as vectors over the vocabulary: s1 = {tower, paris}, s2 = {built, 1889}.
    # "Tower in Paris, built 1889." = {tower, paris, built, 1889}: cosine with s1 = 2 / (2 * sqrt 2) = 0.70711
    #   (same with s2) -> 0.70711 >= 0.6.
    # "Green cheese tower." = {green, cheese, tower}: best is s1, 1 / (sqrt 3 * sqrt 2) = 0.40825 < 0.6.
    # "Nothing known here." = zero vector -> 0.0.
    answer = "Tower in Paris, built 1889. Green cheese tower. Nothing known here."
    share, scores = groundedness_embedding(answer, passages, fake_embed)
    assert scores == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(6), 0.0])
    assert share == pytest.approx(1 / 3)
    assert groundedness_embedding("", passages, fake_embed) == (1.0, [])
    assert groundedness_embedding("Tower.", [], fake_embed) == (0.0, [0.0])


def test_groundedness_embedding_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, dim\)"):
        groundedness_embedding("Tower.", ["Paris."], lambda texts: np.zeros((1, 3)))


# --------------------------------------------------------------------------- semantic similarity, citations


def test_semantic_similarity_takes_the_best_reference() -> None:
    # Over the bag-of-words vocabulary: "tower paris" = (1,1,0,...); reference "tower" = (1,0,...) -> cosine
    # 1/sqrt 2; reference "Paris tower!" = (1,1,0,...) -> 1.0, the best.
    assert semantic_similarity("tower paris", ["tower"], fake_embed) == pytest.approx(1 / math.sqrt(2))
    assert semantic_similarity("tower paris", ["tower", "Paris tower!"], fake_embed) == pytest.approx(1.0)
    assert semantic_similarity("green cheese", "tower", fake_embed) == 0.0  # orthogonal
    assert semantic_similarity("", ["tower"], fake_embed) == 0.0
    assert semantic_similarity("tower", [], fake_embed) == 0.0


def test_strip_citations_removes_every_marker_form() -> None:
    assert strip_citations("It has 28 days [1]. Part-timers get less [2, 3][doc 4].") == (
        "It has 28 days . Part-timers get less ."
    )
    assert token_f1(strip_citations("28 days [1]"), "28 days") == 1.0  # "[1]" would otherwise be the token "1"


CITED = {
    1: "Every full-time employee gets 28 days of paid leave per calendar year.",
    2: "Calibrate the wrench every 5,000 cycles or once a year.",
    3: "The warranty covers defects for 24 months.",
}


def test_citation_correctness_on_a_hand_worked_answer() -> None:
    answer = (
        "Employees get 28 days of paid leave [1]. Calibrate every 5,000 cycles [2]. "
        "The warranty lasts ten years [2][3]."
    )
    # Sentence 1, content tokens {employees, get, 28, days, paid, leave}: passage 1 has 28, days, paid, leave
    #   (not "employees" or "get": it says "employee gets") -> 4/6 >= 0.5, supported.
    # Sentence 2, {calibrate, every, 5000, cycles}: all in passage 2 -> 1.0, supported.
    # Sentence 3, {warranty, lasts, ten, years}: passage 2 has none ("year" is not "years") -> 0.0; passage 3 has
    #   "warranty" -> 1/4. Both citations unsupported. Four citations, two supported: 0.5.
    share, checks = citation_correctness(answer, CITED)
    assert share == 0.5
    assert [(c.number, c.supported) for c in checks] == [(1, True), (2, True), (2, False), (3, False)]
    assert checks[0] == CitationCheck(1, "Employees get 28 days of paid leave .", pytest.approx(4 / 6), True)
    assert checks[3].support == pytest.approx(0.25)


def test_a_marker_opening_a_sentence_belongs_to_the_sentence_before() -> None:
    # Models often write "... leave. [1] Next sentence": the sentence splitter puts "[1]" at the start of the
    # second sentence, which passage 1 does not support ({parttimers, get, share}: 0/3).
    share, checks = citation_correctness("Employees get 28 days of paid leave. [1] Part-timers get a share.", CITED)
    assert share == 1.0
    assert checks[0].sentence == "Employees get 28 days of paid leave."


def test_citation_correctness_edge_cases() -> None:
    assert citation_correctness("No markers here.", CITED) == (None, [])
    share, checks = citation_correctness("Employees get 28 days of paid leave [1, 7].", CITED)
    assert share == 0.5 and [(c.number, c.supported, c.support) for c in checks][1] == (7, False, 0.0)
    # A stricter threshold turns the 4/6 support into a miss.
    assert citation_correctness("Employees get 28 days of paid leave [1].", CITED, threshold=0.7)[0] == 0.0
