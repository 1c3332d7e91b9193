#!/usr/bin/env python3
"""Commit sizes of the write buffer's drains, simulated (docs/architecture.md, "staggered drains").

Batches of 1M rows spread evenly over N partitions fill per-partition buffers. When the buffered
rows reach T, a drain hands over the fullest partitions until they hold at least the fraction f
of the buffered rows (f = 1: everything, what duckpart did until session 18; it now uses 1/8). Peak memory is about
T * (1 + f) (the filling set plus the set being drained), so T = budget / (1 + f) keeps it equal.
Prints the mean and smallest commit (rows per partition per commit) in the steady state.

    python3 bench/staggered_drain_sim.py [PARTITIONS] [BUDGET_ROWS]
"""
import sys


def simulate(n, threshold, fraction, batches=400, batch=1e6):
    fill = [0.0] * n
    commits = []
    for _ in range(batches):
        for i in range(n):
            fill[i] += batch / n
        total = sum(fill)
        if total < threshold:
            continue
        freed = 0.0
        for i in sorted(range(n), key=lambda k: -fill[k]):
            if freed >= fraction * total:
                break
            freed += fill[i]
            commits.append(fill[i])
            fill[i] = 0.0
    steady = commits[len(commits) // 2:]
    return sum(steady) / len(steady), min(steady)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 360
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 30e6
    for fraction in (1.0, 0.5, 0.33, 0.25, 0.125):
        threshold = budget / (1 + fraction)
        mean, low = simulate(n, threshold, fraction)
        print(f"hand over {fraction:.2f} of the set at {threshold / 1e6:.1f}M rows: "
              f"{mean / 1e3:.0f}K rows per commit (smallest {low / 1e3:.0f}K)")


if __name__ == "__main__":
    main()
