"""Scoring: P(M) and its companions from one run's cell results (pure: no I/O, no torch).

A cell is (task i, dataset j, strategy k) of a model's planned grid; its score P_ijk is the mean
of its seeds' scores. Plain `math`/`statistics` keep the arithmetic exact where it can be
(`fsum`, `fmean`, and `statistics.variance`/`pstdev`, which work in exact fractions); the
test-sampling noise, a sum over test examples, is computed with numpy (`_sampling`).

Definitions (DESIGN.md §1):

Scored cell
    status ok, cached or diverged, and a finite score. Diverged cells count as they are (usually
    chance level): diverging is a real outcome. `failed` cells and planned cells without a result
    are left out; coverage shows the hole.

P(M) (`persistence`)
    P(M) = (1/N_T) Σ_i (1/N_D,i) Σ_j (1/N_S,ij) Σ_k P_ijk
    where every mean runs over what is scored: N_S,ij strategies scored for (i, j); N_D,i datasets
    of task i with ≥ 1 scored cell; N_T tasks with ≥ 1 scored cell. For a complete rectangular
    grid this is the plain mean over all cells; tasks with different numbers of datasets weigh the
    same; a failed cell renormalises the means above it. None when nothing is scored.

Cell weight (`cell_weights`)
    w_ijk = 1 / (N_T · N_D,i · N_S,ij), so that P(M) = Σ_ijk w_ijk · P_ijk and Σ w_ijk = 1.

Standard error (`stderr`, `stderr_seeds`, `noise`)
    P(M) = Σ_j W_j · d_j over datasets j (task i, dataset), W_j = 1 / (N_T · N_D,i), d_j the
    dataset's score: the mean over its N_S strategies of each cell's mean seed score. Two sources
    of noise are estimated per dataset, as variances of d_j (`noise[task][dataset]`):
    seeds_j = (1/N_S)² Σ_{c in j} s_c² / n_c,
        s_c² the sample variance (ddof = 1) of cell c's seed scores, n_c its number of seeds. A
        cell with a single seed takes the pooled variance s_pool² = mean of s_c² over the model's
        cells with n_c ≥ 2 (unweighted), with n_c = 1. None when no scored cell has ≥ 2 seeds.
        Non-finite seed scores are left out of s_c² and n_c.
    test_j = the test sample's sampling noise of d_j, from the trials' predictions (delta method
        over the test examples, stratified by class, all cells and seeds of the dataset together
        since they share the test split, less the part the seed spread already holds: see
        `_sampling`). None without predictions or without the task's metric.
    Test splits of different datasets are independent samples, and training noise is independent
    of the test sample, so
        stderr = sqrt(Σ_j W_j² (seeds_j + test_j)),     stderr_seeds = sqrt(Σ_j W_j² seeds_j).
    The weights are treated as fixed (which cells failed is not noise). The drop rule also uses
    the breakdown: a dataset whose snapshot two runs share has the same test sample in both.

Spread (`spread`)
    population standard deviation (ddof = 0) of the scored cells' scores:
    sqrt((1/n) Σ_c (P_c − P̄)²), plain over cells (it describes the grid, not P(M)). None if
    nothing is scored.

Worst cell (`worst_cell`, `worst_cell_score`)
    argmin_c P_c over scored cells; ties go to the first in `planned` order.

Coverage (`coverage`)
    scored cells / planned cells; 0.0 when nothing is planned.

Marginals (entries only where ≥ 1 cell is scored; dicts in planned order)
    task_scores[i]       = (1/N_D,i) Σ_j (1/N_S,ij) Σ_k P_ijk        so P(M) = (1/N_T) Σ_i task_scores[i]
    dataset_scores[i][j] = (1/N_S,ij) Σ_k P_ijk
    strategy_scores[k]   = (1/N_T,k) Σ_i (1/N_D,ik) Σ_j P_ijk
        P(M) restricted to strategy k: N_T,k tasks with a scored k-cell, N_D,ik datasets of
        task i with a scored k-cell. Every task weighs the same, as in P(M).

Attribution (`attribute_change`)
    the contribution of cell c to P_after − P_before is
        Δ_c = w_c,after · P_c,after − w_c,before · P_c,before      (a side where c is not scored is 0)
    so that Σ_c Δ_c = P_after − P_before exactly (when both are defined). On an unchanged grid
    this is w · (after − before). When the scored grid changes (a cell fails, a dataset is added)
    the weights change too, and the re-weighting of unchanged cells shows up as their
    contribution: the decomposition stays additive, which a fixed-weight w·(after − before) would
    not be. Cells are listed by |Δ_c|, largest first.

Comparison (`compare_models`)
    Ranking: the models by P(M), best first (each over its own scored cells, with its stderr and
    coverage as above); equal P(M) keep the given order, models without a P(M) come last.
    Pair (A, B), A ranked above B: the shared cells C are those both scored *on the same
    snapshot* (a cell scored on different snapshots is not paired: its two scores are not on
    one test sample; `unpaired` counts them). Over C, with P(M)'s weights computed on C alone
    (w_c = 1 / (N_T · N_D,i · N_S,ij), the same for both models),
        D = P_A|C − P_B|C = Σ_c w_c (A_c − B_c).
    Var(D) = Σ_j W_j² (seeds_A,j + seeds_B,j + test_j)   over the datasets j of C, where
        seeds_X,j is seeds_j above for model X's cells in C (the pooled s² of single-seed cells
            is pooled over X's cells in C): the two models' fine-tunes are independent;
        test_j is the test noise of the *difference* of the dataset's scores, d_A,j − d_B,j: both
            models were scored on the same test examples, so the influences are those of the
            difference, x_i = Σ_c (1/N_S) (φ̄_A,c,i − φ̄_B,c,i), and the test noise the two share
            cancels (two models right and wrong on the same examples differ by little). The
            seed-specific part is taken off for each model's cells as in `_sampling`. Should the
            two turn out scored on different examples, their test noises are added (independent).
        A dataset whose cells are the very same trials for both (one model under two names)
        adds nothing: its difference is exactly 0.
    stderr = sqrt(Var(D)), stderr_seeds = sqrt(Σ_j W_j² (seeds_A,j + seeds_B,j)); a part that
    cannot be estimated (a single seed everywhere, no predictions) is left out, as in P(M)'s.
    The cells that differ most: the cells of C with A_c ≠ B_c by |A_c − B_c|, largest first
    (ties in A's planned order), each with its term w_c (A_c − B_c) of D.

Results must match the plan: a result for an unplanned cell, two results for one cell, or a cell
planned twice raise ValueError (they would make coverage or weights silently wrong).
"""

from ._attribution import CellContribution, attribute_change
from ._compare import CellDifference, Comparison, ModelCells, PairedDifference, RankedModel, compare_models
from ._grid import SCORED_STATUSES, CellId
from ._persistence import cell_weights, score_model

__all__ = [
    "SCORED_STATUSES",
    "CellContribution",
    "CellDifference",
    "CellId",
    "Comparison",
    "ModelCells",
    "PairedDifference",
    "RankedModel",
    "attribute_change",
    "cell_weights",
    "compare_models",
    "score_model",
]
