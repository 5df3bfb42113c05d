"""Signal quality of the default alert rules: false pages on a stable model, delay on real drops.

    python -m benchmarks.alerts                  # the table published in the README
    python -m benchmarks.alerts --trials 500     # tighter estimates

Each simulated run is a real grid: 2 tasks × 2 datasets × 5 strategies = 20 cells, 2 seeds, each
seed's score = the cell's true value + seed noise. Seed noise is set so that P(M)'s standard error
is about 0.01 (the figure the targets are stated in). P(M) and its stderr come from the real
scoring code, states from the real rule conditions and hysteresis, with the default rules of
`monitor.settings`. A "page" is a transition into firing.

Targets: at most 1 false page per 500 stable runs; a true drop of 0.05 paged within 2 runs in at
least 95 % of trials.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.alerts import HistoryPoint, advance, condition
from monitor.scoring import score_model
from monitor.settings import AlertsSettings
from monitor.types import AlertState, CellResult

TASKS, DATASETS, STRATEGIES, SEEDS = 2, 2, 5, 2
CELLS = [
    (f"t{t}", f"d{d}", f"s{s}") for t in range(TASKS) for d in range(DATASETS) for s in range(STRATEGIES)
]
# stderr(P) = sigma / sqrt(seeds * cells) for this rectangular grid: 0.01 at sigma = 0.01 * sqrt(40)
SEED_SIGMA = 0.01 * math.sqrt(SEEDS * len(CELLS))


@dataclass
class Simulation:
    rng: random.Random
    truth: dict[tuple[str, str, str], float]

    @classmethod
    def new(cls, rng: random.Random) -> Simulation:
        return cls(rng, {cell: rng.uniform(0.7, 0.95) for cell in CELLS})

    def run(self, shift: float) -> list[CellResult]:
        cells = []
        for (task, dataset, strategy), value in self.truth.items():
            seeds = tuple(value - shift + self.rng.gauss(0.0, SEED_SIGMA) for _ in range(SEEDS))
            cells.append(
                CellResult("m", task, dataset, "s", strategy, "ok", statistics.fmean(seeds), seeds, 1.0)
            )
        return cells


def _pages(sim: Simulation, shifts: list[float]) -> tuple[list[int], list[bool]]:
    """Indices of the runs (0-based) at which a default rule started firing; and, per run,
    whether any rule was firing after it."""
    rules = [r for r in AlertsSettings().rules if r.kind in ("drop", "below", "cell_drop", "incomplete")]
    states: dict[str, AlertState | None] = {r.name: None for r in rules}
    history: list[HistoryPoint] = []
    previous_cells: list[CellResult] = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    pages = []
    firing = []
    for index, shift in enumerate(shifts):
        cells = sim.run(shift)
        score = score_model("m", "v", cells, CELLS)
        now = start + timedelta(hours=6 * index)
        current = HistoryPoint(f"{index:032x}", now, score)
        for rule in rules:
            found = condition(
                rule, "m", current, history, now=now, previous_cells=previous_cells, current_cells=cells
            )
            transition = advance(states[rule.name], rule, "m", found, now=now, run_id=current.run_id)
            states[rule.name] = transition.state
            if transition.event == "firing":
                pages.append(index)
        history.append(current)
        previous_cells = cells
        firing.append(any(s is not None and s.state == "firing" for s in states.values()))
    return pages, firing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--runs", type=int, default=500, help="stable runs per false-page trial")
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rules = AlertsSettings().rules
    print("default rules: " + "; ".join(f"{r.name} ({r.kind})" for r in rules))
    print(f"grid: {len(CELLS)} cells × {SEEDS} seeds, seed noise σ = {SEED_SIGMA:.4f} → stderr(P) ≈ 0.010")

    false_pages = [len(_pages(Simulation.new(rng), [0.0] * args.runs)[0]) for _ in range(args.trials)]
    rate = statistics.fmean(false_pages)
    print()
    print(
        f"| scenario | pages per {args.runs} runs (mean over {args.trials} trials) | trials with any page |"
    )
    print("|---|---|---|")
    print(f"| stable model | {rate:.2f} | {sum(1 for p in false_pages if p) / args.trials:.0%} |")

    warmup, after = 10, 10
    print()
    print("| true drop of P(M) | paged within 1 run | within 2 runs | within 5 runs | median delay (runs) |")
    print("|---|---|---|---|---|")
    figures = {}
    for drop in (0.02, 0.03, 0.05, 0.10):
        delays = []
        for _ in range(args.trials):
            # Detected once an alert is firing after the change (paged then, or still firing).
            _, firing = _pages(Simulation.new(rng), [0.0] * warmup + [drop] * after)
            hits = [i for i in range(warmup, warmup + after) if firing[i]]
            delays.append(hits[0] - warmup + 1 if hits else math.inf)
        within = {k: sum(1 for d in delays if d <= k) / args.trials for k in (1, 2, 5)}
        finite = [d for d in delays if d != math.inf]
        median = statistics.median(delays) if len(finite) * 2 > len(delays) else math.inf
        figures[drop] = within
        shown = "not within 10" if median == math.inf else f"{median:g}"
        print(f"| {drop:.2f} | {within[1]:.0%} | {within[2]:.0%} | {within[5]:.0%} | {shown} |")
    ok = rate * 500 / args.runs <= 1.0 and figures[0.05][2] >= 0.95
    print()
    print(
        "targets (≤ 1 false page per 500 stable runs; 0.05 paged within 2 runs in ≥ 95 %):",
        "met" if ok else "NOT met",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
