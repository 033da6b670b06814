"""Before/after in the same run: the PBX part of a bench against several checkouts.

``--server-tree PATH`` (repeatable) makes ``bench calls`` / ``bench register`` run the PBX part
once per checkout, back to back (``--rounds N``: N times, interleaved A B A B …), each with that
checkout's ``.venv/bin/python``; the SIPp-direct baseline runs once. The first tree is the
reference: every other one is reported as ratios against it — its sustained rate, and its server
CPU per operation at the rates both sustained (a ratio of CPU per operation at equal load is the
finer figure: rate ceilings move in whole steps).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from bench._procs import Tree


def add_tree_args(parser: argparse.ArgumentParser) -> None:
    """The ``--server-tree`` and ``--rounds`` options."""
    parser.add_argument(
        "--server-tree", action="append", default=[], metavar="PATH",
        help="run the PBX part against the checkout at PATH (its .venv/bin/python); repeat to "
             "compare checkouts in the same run, the first one is the reference "
             "(default: this checkout)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with several trees: run each N times, interleaved")


def trees_from(args: argparse.Namespace) -> list[Tree]:
    """The trees to bench (this checkout when none is given)."""
    return [Tree.at(p) for p in args.server_tree] or [Tree()]


def schedule(trees: int, rounds: int) -> list[int]:
    """Tree indices in run order: ``rounds`` rounds of every tree, interleaved (0 1 0 1 …)."""
    return [i for _ in range(max(1, rounds)) for i in range(trees)]


def pool(runs: Iterable[Sequence[dict[str, Any]]], key: str) -> dict[int, float]:
    """Per rate: the median of ``key`` over the steps of ``runs`` that held that rate."""
    by_rate: dict[int, list[float]] = {}
    for rows in runs:
        for row in rows:
            value = row.get(key)
            if row.get("sustained") and isinstance(value, int | float):
                by_rate.setdefault(int(row["rate"]), []).append(float(value))
    return {rate: statistics.median(vals) for rate, vals in sorted(by_rate.items())}


def ratio(a: float | None, b: float | None) -> float | None:
    """``b / a`` rounded to three digits, ``None`` when either is missing or ``a`` is 0."""
    if a is None or b is None or a == 0:
        return None
    return round(b / a, 3)


def compare_cpu(ref: dict[int, float], other: dict[int, float]) -> dict[str, Any]:
    """``other`` against ``ref`` (rate → CPU per operation): the ratio at each rate both held,
    and their geometric mean (1.05 = the other tree costs 5 % more CPU per operation)."""
    common = sorted(set(ref) & set(other))
    per_rate = {rate: ratio(ref[rate], other[rate]) for rate in common}
    valid = [r for r in per_rate.values() if r is not None and r > 0]
    mean = round(math.exp(sum(math.log(r) for r in valid) / len(valid)), 3) if valid else None
    return {"common_rates": common, "cpu_ratio_per_rate": per_rate, "cpu_ratio_geomean": mean}


def summarize(trees: Sequence[Tree], runs: Sequence[tuple[int, int, list[dict[str, Any]]]],
              cpu_key: str) -> dict[str, Any]:
    """Per tree: its runs' best rates (and their median), CPU per operation pooled by rate;
    then each tree after the first against the first. ``runs`` holds
    ``(tree index, best rate, step rows)`` per PBX climb."""
    per_tree: list[dict[str, Any]] = []
    pooled: list[dict[int, float]] = []
    for i, tree in enumerate(trees):
        mine = [(best, rows) for t, best, rows in runs if t == i]
        bests = [best for best, _ in mine]
        cpu = pool((rows for _, rows in mine), cpu_key)
        pooled.append(cpu)
        per_tree.append({"tree": tree.describe(), "best_rates": bests,
                         "best_rate_median": statistics.median(bests) if bests else None,
                         cpu_key + "_by_rate": {str(r): round(v, 3) for r, v in cpu.items()}})
    against: list[dict[str, Any]] = []
    for i in range(1, len(trees)):
        cmp = compare_cpu(pooled[0], pooled[i])
        against.append({"reference": per_tree[0]["tree"], "tree": per_tree[i]["tree"],
                        "rate_ratio": ratio(per_tree[0]["best_rate_median"],
                                            per_tree[i]["best_rate_median"]),
                        **{k: ({str(r): v for r, v in val.items()} if isinstance(val, dict)
                               else val) for k, val in cmp.items()}})
    return {"trees": per_tree, "against_reference": against}


def print_summary(summary: dict[str, Any], cpu_key: str, unit: str) -> None:
    """The human-readable lines of :func:`summarize`."""
    for t in summary["trees"]:
        cpu = ", ".join(f"{r}: {v}" for r, v in t[cpu_key + "_by_rate"].items())
        print(f"tree {t['tree']}: sustained {t['best_rates']} {unit} "
              f"(median {t['best_rate_median']}); {cpu_key} by rate {{{cpu}}}")
    for c in summary["against_reference"]:
        print(f"{c['tree']} vs {c['reference']}: rate ×{c['rate_ratio']}, CPU per operation "
              f"×{c['cpu_ratio_geomean']} (geometric mean over {c['common_rates']})")
