"""How large a dataset's test split must be for the default drop rule to tell a real drop from noise.

Every new snapshot brings a new test sample, and with it sampling noise in P(M): about
sqrt(p (1 − p) / N) in a dataset's score for N test images at accuracy p (its cells move together:
they share the examples). `python -m benchmarks.alerts` measures the default rules on a 20-cell
grid (2 tasks × 2 datasets × 5 strategies, 2 seeds, seed-only stderr 0.01) whose every dataset
gets a new snapshot every run: from MIN_TEST_IMAGES test images per dataset on they catch a
0.05 drop of P(M) within 2 runs in ≥ 95 % of trials at < 1 false page per 500 stable runs;
at 80 images, no setting of the rule does both (README, "Sizing the test split").
"""

from __future__ import annotations

__all__ = ["MIN_TEST_IMAGES", "small_test_split"]

MIN_TEST_IMAGES = 400


def small_test_split(n_test: int, *, at_most: bool = False) -> str | None:
    """Why a test split of `n_test` images (`at_most`: of no more than) is too small for the default
    drop rule, or None."""
    if n_test >= MIN_TEST_IMAGES:
        return None
    noise = (0.8 * 0.2 / max(n_test, 1)) ** 0.5
    return (
        f"its test split holds {'at most ' if at_most else ''}{n_test} images (fewer than {MIN_TEST_IMAGES}): each new snapshot moves "
        f"the dataset's score by about {noise:.3f} by test-sample noise alone, and the default drop rule "
        f"then misses drops of 0.05 (raise test_per_class, or see README 'Sizing the test split')"
    )
