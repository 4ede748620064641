"""Bootstrap intervals, paired comparison and latency percentiles: determinism, coverage and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from eval.stats import bootstrap_ci, bootstrap_ratio, paired_bootstrap, percentile


def test_bootstrap_is_deterministic_per_seed() -> None:
    values = list(np.random.default_rng(7).random(300))
    assert bootstrap_ci(values) == bootstrap_ci(values)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_bootstrap_width_matches_normal_theory() -> None:
    # 400 draws of N(0, 1): the 95% interval half-width should be close to 1.96 / sqrt(400) = 0.098.
    values = list(np.random.default_rng(3).normal(0.0, 1.0, 400))
    ci = bootstrap_ci(values, n_resamples=4000)
    assert ci.mean == pytest.approx(float(np.mean(values)))
    assert ci.n == 400 and ci.confidence == 0.95
    assert ci.low < ci.mean < ci.high
    assert (ci.high - ci.low) / 2 == pytest.approx(1.96 * float(np.std(values)) / 20, rel=0.15)


def test_higher_confidence_is_wider() -> None:
    values = list(np.random.default_rng(5).random(100))
    narrow = bootstrap_ci(values, confidence=0.8)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_constant_and_single_values_have_zero_width() -> None:
    ci = bootstrap_ci([0.5] * 10)
    assert (ci.mean, ci.low, ci.high) == pytest.approx((0.5, 0.5, 0.5))
    single = bootstrap_ci([0.25])
    assert (single.low, single.high, single.n) == (0.25, 0.25, 1)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "empty"),
        ([0.1, float("nan")], {}, "NaN or infinity at index 1"),
        ([[0.1, 0.2]], {}, "flat sequence"),
        ([0.1], {"confidence": 1.0}, "confidence"),
        ([0.1], {"n_resamples": 0}, "n_resamples"),
    ],
)
def test_bootstrap_rejects_bad_input(values: list[float], kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(values, **kwargs)  # type: ignore[arg-type]


def test_paired_constant_improvement() -> None:
    a = [0.1, 0.5, 0.9, 0.3]
    b = [x + 0.1 for x in a]
    result = paired_bootstrap(a, b)
    assert result.diff == pytest.approx(0.1)
    assert (result.low, result.high) == pytest.approx((0.1, 0.1))
    assert result.p_value == 0.0
    assert result.mean_b - result.mean_a == pytest.approx(result.diff)


def test_paired_identical_runs() -> None:
    a = [0.2, 0.4, 0.6]
    result = paired_bootstrap(a, a)
    assert result.diff == 0.0
    assert result.p_value == 1.0  # every resampled difference is exactly 0, i.e. "not better"


def test_pairing_removes_question_difficulty() -> None:
    # Question difficulty varies a lot; b beats a by 0.05 with little per-question noise.
    rng = np.random.default_rng(11)
    difficulty = rng.random(200)
    a = list(difficulty)
    b = list(difficulty + 0.05 + rng.normal(0.0, 0.02, 200))
    paired = paired_bootstrap(a, b)
    assert paired.low > 0 and paired.p_value == 0.0
    # Unpaired intervals overlap: they cannot tell the runs apart, the paired one can.
    ci_a, ci_b = bootstrap_ci(a), bootstrap_ci(b)
    assert ci_b.low < ci_a.high
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)


def test_paired_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="a has 2 values, b has 3"):
        paired_bootstrap([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="b is empty"):
        paired_bootstrap([0.1], [])


def test_percentile_linear_interpolation() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    # 1..100: position 0.95 * 99 = 94.05 -> 95 + 0.05 * (96 - 95) = 95.05
    assert percentile([float(x) for x in range(1, 101)], 95) == pytest.approx(95.05)
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0 and percentile([3.0, 1.0, 2.0], 100) == 3.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 0.95 * 1000)


def test_bootstrap_ratio_is_a_ratio_of_sums() -> None:
    # Abstention precision over four questions: refused = denominators, refused and unanswerable = numerators.
    # 2 true refusals of 3 refusals -> 2/3; the unrefused question (0/0) adds nothing but is resampled.
    ci = bootstrap_ratio([1, 0, 1, 0], [1, 1, 1, 0])
    assert ci is not None
    assert ci.mean == pytest.approx(2 / 3) and ci.n == 3
    assert 0.0 <= ci.low <= ci.mean <= ci.high <= 1.0
    assert bootstrap_ratio([1, 0, 1, 0], [1, 1, 1, 0]) == ci, "seeded: same inputs, same interval"
    # Uneven denominators: (1 + 1) / (1 + 2) = 2/3, not the mean of 1/1 and 1/2.
    ratio = bootstrap_ratio([1, 1], [1, 2])
    assert ratio is not None and ratio.mean == pytest.approx(2 / 3)


def test_bootstrap_ratio_without_denominator_is_none() -> None:
    assert bootstrap_ratio([0, 0], [0, 0]) is None
    with pytest.raises(ValueError, match="one pair per question"):
        bootstrap_ratio([1], [1, 1])
