"""Paired comparison of two generator settings from `bench_generator.py` result files.

Each side is one or more result JSONs of the same setting on different seeds (the other side must use the
same seeds, so both see the same atom counts and element-count draws). Counts are pooled over a side's
files and compared with a two-sided reading of the two-proportion z statistic (|z| < 2: within noise).
Per-seed density distances are listed, not pooled: each is a Wasserstein distance of its own set.

Run:  .venv/bin/python benchmarks/compare_generator_runs.py \
        --a benchmarks/results/stage5_steps1000_seed{0,5}.json --a-name "1000 steps" \
        --b benchmarks/results/generator.json benchmarks/results/stage5_budget_seed5_p3.json --b-name shipped \
        [--out benchmarks/results/paired_steps1000.json]
Prints a Markdown table (the README's paired tables) and optionally writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tessera.tools.measures import two_proportion_z_test

#: (row label, count key in model.evaluation, or "smact" for compositional validity x n).
RATE_ROWS = (
    ("stable", "n_stable"),
    ("S.U.N.", "n_sun"),
    ("gated S.U.N. (passes the full prescreen)", "n_sun_prescreen_passed"),
    ("E_hull <= 0 (any)", "n_stable_le0"),
    ("E_hull <= 0 and unique and novel", "n_sun_le0"),
    ("SMACT", "smact"),
)


def counts_of(result: dict[str, Any]) -> tuple[int, dict[str, int | None]]:
    """(samples, {count key: count}) of one bench_generator result's model set; None for a count the file
    predates (n_sun_le0)."""
    model = result["model"]
    n = int(model["n"])
    ev = model.get("evaluation")
    if not ev:
        raise SystemExit(f"result for seed {result.get('seed')} has no evaluation (run without --no-evaluate)")
    counts: dict[str, int | None] = {key: ev.get(key) for _, key in RATE_ROWS if key != "smact"}
    counts["smact"] = round(float(model["compositional_validity"]) * n)
    return n, counts


def pooled(results: list[dict[str, Any]]) -> tuple[int, dict[str, int | None], list[float]]:
    """Pooled samples and counts over a side's files (None if any file lacks the count), and each file's
    density W1 (g/cm^3)."""
    n_total, densities = 0, []
    totals: dict[str, int | None] = {key: 0 for _, key in RATE_ROWS}
    for result in results:
        n, counts = counts_of(result)
        n_total += n
        for key, value in counts.items():
            total = totals[key]
            totals[key] = None if value is None or total is None else total + int(value)
        densities.append(float(result["model"]["wdist_density_g_cm3"]))
    return n_total, totals, densities


def seeds_of(results: list[dict[str, Any]]) -> list[int | None]:
    """The sampling seed each result records (None for files written before it was recorded)."""
    return [result.get("seed") for result in results]


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of (label, share A, share B, z of A over B) plus density lists; z None when undefined."""
    n_a, c_a, d_a = pooled(a)
    n_b, c_b, d_b = pooled(b)
    rows = []
    for label, key in RATE_ROWS:
        if c_a[key] is None or c_b[key] is None:
            continue
        test = two_proportion_z_test(c_a[key], n_a, c_b[key], n_b)
        rows.append({"measure": label, "k_a": c_a[key], "k_b": c_b[key], "share_a": test.p_guided,
                     "share_b": test.p_unguided, "z_a_over_b": test.z})
    return {"n_a": n_a, "n_b": n_b, "rows": rows, "density_w1_a": d_a, "density_w1_b": d_b}


def markdown(table: dict[str, Any], name_a: str, name_b: str) -> str:
    lines = [f"| {table['n_a']} vs {table['n_b']} samples | {name_a} | {name_b} | z |", "|---|---|---|---|"]
    for row in table["rows"]:
        z = "n/a" if row["z_a_over_b"] is None else f"{row['z_a_over_b']:.1f}"
        lines.append(f"| {row['measure']} | {100 * row['share_a']:.1f}% ({row['k_a']}) | "
                     f"{100 * row['share_b']:.1f}% ({row['k_b']}) | {z} |")
    dens = lambda ds: " / ".join(f"{d:.2f}" for d in ds)  # noqa: E731
    lines.append(f"| density W1 per seed (g/cm^3) | {dens(table['density_w1_a'])} | {dens(table['density_w1_b'])} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="result JSONs of setting A, one per seed")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="result JSONs of setting B, same seeds")
    ap.add_argument("--a-name", default="A")
    ap.add_argument("--b-name", default="B")
    ap.add_argument("--out", type=Path, help="also write the comparison as JSON")
    args = ap.parse_args()
    results_a = [json.loads(p.read_text()) for p in args.a]
    results_b = [json.loads(p.read_text()) for p in args.b]
    seeds_a, seeds_b = seeds_of(results_a), seeds_of(results_b)
    if None in seeds_a + seeds_b:
        # Results written before bench_generator recorded its seed: the caller vouches for the pairing.
        print("note: some files do not record their seed; pairing as given")
    elif sorted(seeds_a) != sorted(seeds_b):
        raise SystemExit(f"the two sides use different seeds: {sorted(seeds_a)} vs {sorted(seeds_b)}")
    table = compare(results_a, results_b)
    table.update(name_a=args.a_name, name_b=args.b_name, files_a=[str(p) for p in args.a],
                 files_b=[str(p) for p in args.b])
    print(markdown(table, args.a_name, args.b_name))
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
