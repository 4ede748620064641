"""Answer-quality metrics as pure functions: SQuAD EM/F1, ROUGE-L, BLEU, abstention and groundedness.

Every text metric scores normalised tokens (SQuAD v1.1 normalisation) against several references and keeps the best,
as the SQuAD script does, so one paraphrased reference cannot sink a correct answer.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rag.citations import CITATION
from rag.text import lexical_support, normalize_answer, sentence_split, tokens

__all__ = [
    "AbstentionMetrics",
    "CitationCheck",
    "abstention_metrics",
    "bleu",
    "citation_correctness",
    "exact_match",
    "groundedness_embedding",
    "groundedness_lexical",
    "lexical_support",
    "normalize_answer",
    "rouge_l",
    "semantic_similarity",
    "sentence_split",
    "strip_citations",
    "token_f1",
]

_tokens = tokens  # the same tokens the answer checker and the UI use (rag.text)


def _references(references: str | Sequence[str]) -> list[str]:
    if isinstance(references, str):
        return [references]
    # SQuAD 2.0's script does the same: a question without reference answers is scored against the empty answer,
    # so only an empty (abstaining) prediction gets credit.
    return list(references) or [""]


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0 (both empty counts as equal)."""
    normalized = normalize_answer(prediction)
    return 1.0 if any(normalized == normalize_answer(ref) for ref in _references(references)) else 0.0


def _f1_from_overlap(overlap: int, n_prediction: int, n_reference: int) -> float:
    if n_prediction == 0 or n_reference == 0:
        # SQuAD 2.0 rule: an empty side scores 1 only if the other side is empty too.
        return 1.0 if n_prediction == n_reference else 0.0
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_prediction, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """SQuAD token F1: bag-of-tokens overlap (counts clipped) between prediction and reference; best reference wins."""
    predicted = Counter(_tokens(prediction))
    n_predicted = sum(predicted.values())
    best = 0.0
    for ref in _references(references):
        gold = Counter(_tokens(ref))
        overlap = sum((predicted & gold).values())
        best = max(best, _f1_from_overlap(overlap, n_predicted, sum(gold.values())))
    return best


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    # Classic O(len(a) * len(b)) dynamic programme with one rolling row: answers are tens of tokens, so this is
    # microseconds, and memory stays O(len(b)).
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F-measure: longest common token subsequence, P = LCS/len(pred), R = LCS/len(ref), best reference.

    beta = 1, so F = 2PR / (P + R): the `fmeasure` that Google's rouge-score package (and Hugging Face `evaluate`,
    which wraps it) reports, the usual published "RougeL". Lin (2004) lets beta > 1 favour recall; we do not.
    Tokens are SQuAD-normalised, so articles are dropped: figures can differ slightly from rouge-score, which keeps
    them. Empty prediction and reference follow the SQuAD 2.0 rule (both empty = 1.0, one empty = 0.0).
    """
    predicted = _tokens(prediction)
    best = 0.0
    for ref in _references(references):
        gold = _tokens(ref)
        best = max(best, _f1_from_overlap(_lcs_length(predicted, gold), len(predicted), len(gold)))
    return best


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(prediction: str, references: str | Sequence[str], max_n: int = 4) -> float:
    """Sentence-level BLEU (Papineni et al. 2002) with uniform weights over 1..max_n-grams, on normalised tokens.

    Counts of each prediction n-gram are clipped by its largest count in any single reference. The brevity penalty
    uses the reference length closest to the prediction's (the shorter one on a tie). Smoothing is Chen & Cherry
    (2014) method 1: an n-gram order with no match gets precision 0.1 / count instead of 0, so a short answer
    that misses all 4-grams is not scored 0. This is NLTK's `sentence_bleu` with `SmoothingFunction().method1`,
    including its two edge rules: no unigram match gives 0.0, and an order longer than the prediction counts
    as 0 matches out of 1. Empty prediction: 1.0 if some reference is empty too, else 0.0.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    predicted = _tokens(prediction)
    gold_lists = [_tokens(ref) for ref in _references(references)]
    if not predicted:
        return 1.0 if any(not gold for gold in gold_lists) else 0.0
    gold_lists = [gold for gold in gold_lists if gold]
    if not gold_lists:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts = _ngrams(predicted, n)
        max_ref_counts: Counter[tuple[str, ...]] = Counter()
        for gold in gold_lists:
            max_ref_counts |= _ngrams(gold, n)  # `|` keeps the maximum count per n-gram
        matches = sum(min(count, max_ref_counts[gram]) for gram, count in counts.items())
        total = max(1, sum(counts.values()))
        if n == 1 and matches == 0:
            return 0.0
        log_precision += math.log((matches if matches else 0.1) / total) / max_n
    length = len(predicted)
    closest = min((len(gold) for gold in gold_lists), key=lambda ref_len: (abs(ref_len - length), ref_len))
    brevity = 1.0 if length > closest else math.exp(1 - closest / length)
    return brevity * math.exp(log_precision)


@dataclass(frozen=True)
class AbstentionMetrics:
    """How well refusals track unanswerable questions; a refusal on an unanswerable question is a true positive.

    A rate whose denominator is zero is None, not 0.0 or NaN: "no unanswerable questions in the set" must not read
    as "recall 0", and None fails loudly if averaged by mistake.
    """

    tp: int  # refused, unanswerable
    fp: int  # refused, answerable
    fn: int  # answered, unanswerable
    tn: int  # answered, answerable
    precision: float | None  # tp / (tp + fp): share of refusals that were right
    recall: float | None  # tp / (tp + fn): share of unanswerable questions refused
    f1: float | None  # 2tp / (2tp + fp + fn)
    wrong_refusal_rate: float | None  # fp / (fp + tn): share of answerable questions refused


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def abstention_metrics(predicted_refusal: Sequence[bool], unanswerable: Sequence[bool]) -> AbstentionMetrics:
    """Score refusals against the truth, question i being predicted_refusal[i] and unanswerable[i].

    F1 is 2tp / (2tp + fp + fn), equal to 2PR / (P + R) where both exist; it stays defined (0.0) when the system
    never refuses (precision None) but some questions were unanswerable.
    """
    if len(predicted_refusal) != len(unanswerable):
        raise ValueError(
            f"predicted_refusal has {len(predicted_refusal)} values but unanswerable has {len(unanswerable)}: "
            "they must describe the same questions in the same order"
        )
    pairs = Counter(
        (bool(refused), bool(truth)) for refused, truth in zip(predicted_refusal, unanswerable, strict=True)
    )
    tp, fp, fn, tn = pairs[True, True], pairs[True, False], pairs[False, True], pairs[False, False]
    return AbstentionMetrics(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        wrong_refusal_rate=_ratio(fp, fp + tn),
    )


def groundedness_lexical(answer: str, passages: Sequence[str], threshold: float = 0.5) -> tuple[float, list[float]]:
    """(share of answer sentences with lexical_support >= threshold, each sentence's support in order).

    An answer with no sentence (an empty answer) claims nothing and scores 1.0: judge refusals with
    abstention_metrics, not here.
    """
    scores = [lexical_support(sentence, passages) for sentence in sentence_split(answer)]
    return _share_at_least(scores, threshold), scores


def _share_at_least(scores: Sequence[float], threshold: float) -> float:
    if not scores:
        return 1.0
    return sum(score >= threshold for score in scores) / len(scores)


def _unit_rows(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # A zero vector (e.g. a sentence of unknown words for a bag-of-words embedder) has cosine 0 with everything.
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def groundedness_embedding(
    answer: str,
    passages: Sequence[str],
    embed: Callable[[list[str]], npt.ArrayLike],
    threshold: float = 0.6,
) -> tuple[float, list[float]]:
    """Like groundedness_lexical, but a sentence's score is its best cosine similarity to any passage sentence.

    `embed` maps n texts to an (n, dim) array; it is called once with the answer sentences followed by every
    passage sentence. Passage sentences rather than whole passages, because a long passage's vector blurs the one
    sentence that supports a claim. Empty answer: (1.0, []); no passage sentence: every score 0.0.
    """
    sentences = sentence_split(answer)
    if not sentences:
        return 1.0, []
    evidence = [piece for passage in passages for piece in sentence_split(passage)]
    if not evidence:
        return 0.0, [0.0] * len(sentences)
    texts = sentences + evidence
    vectors = np.asarray(embed(texts), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"embed must return an array of shape ({len(texts)}, dim) for {len(texts)} texts, got shape {vectors.shape}"
        )
    unit = _unit_rows(vectors)
    similarity = unit[: len(sentences)] @ unit[len(sentences) :].T
    scores = [float(value) for value in similarity.max(axis=1)]
    return _share_at_least(scores, threshold), scores


def semantic_similarity(
    prediction: str, references: str | Sequence[str], embed: Callable[[list[str]], npt.ArrayLike]
) -> float:
    """Best cosine similarity between the prediction's vector and any reference's (one `embed` call).

    Catches paraphrases that token F1 misses ("twenty-eight days" vs "28 days"). An empty prediction or no
    reference scores 0.0: there is nothing to compare.
    """
    refs = [ref for ref in _references(references) if ref.strip()]
    if not prediction.strip() or not refs:
        return 0.0
    vectors = _unit_rows(np.asarray(embed([prediction, *refs]), dtype=np.float64))
    return float(np.max(vectors[1:] @ vectors[0]))


# "[1]", "[2, 3]", "[doc 2]": the marker forms the answer pipeline recognises (it normalises them to "[n]").
_MARKER = CITATION
_LEADING_MARKERS = re.compile(rf"^(?:\s*{_MARKER.pattern})+", re.I)


def strip_citations(text: str) -> str:
    """The answer without its [n] markers, so they do not count as answer tokens ("[1]" normalises to "1")."""
    return " ".join(_MARKER.sub(" ", text).split())


@dataclass(frozen=True)
class CitationCheck:
    """One citation marker: the chunk number it names, the sentence it sits in, and that sentence's support."""

    number: int
    sentence: str
    support: float
    supported: bool


def citation_correctness(
    answer: str, passages: Mapping[int, str], threshold: float = 0.5
) -> tuple[float | None, list[CitationCheck]]:
    """(share of citations whose cited passage supports the sentence citing it, one check per citation).

    `passages` maps citation numbers to the text the prompt showed under them. Each number inside a marker is one
    citation ("[1][2]" and "[1, 2]" are two), judged by `lexical_support` of its sentence (markers removed)
    against that one passage. Markers that open a sentence ("... leave. [1] Part-timers") belong to the
    sentence before, where models put them. A number with no passage counts as unsupported. No citation: None.
    """
    sentences = sentence_split(answer)
    owned: list[tuple[str, list[str]]] = []  # (sentence text without markers, the markers it carries)
    for sentence in sentences:
        leading = _LEADING_MARKERS.match(sentence)
        if leading and owned:
            owned[-1][1].extend(_MARKER.findall(leading.group(0)))
            sentence = sentence[leading.end() :]
        owned.append((strip_citations(sentence), _MARKER.findall(sentence)))
    checks: list[CitationCheck] = []
    for text, markers in owned:
        for marker in markers:
            for number in (int(n) for n in re.findall(r"\d+", marker)):
                passage = passages.get(number)
                support = lexical_support(text, [passage]) if passage is not None else 0.0
                checks.append(CitationCheck(number, text, support, passage is not None and support >= threshold))
    if not checks:
        return None, []
    return sum(check.supported for check in checks) / len(checks), checks
