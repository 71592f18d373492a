"""Motif case studies (issue 15, item 1): SCIGEN-style inpainting vs a hand-placed baseline, through one pipeline.

For each case (a net of one element, e.g. kagome-Mn) two arms go through the same gated evaluation
(``tools.evaluate.evaluate_files`` on the arm's folder, so every crystal keeps its constraint record):

- ours: ``tools.sample.sample_crystals`` with the motif inpainted at every reverse step; the free atoms take
  the case's free elements (below, one small set per case from the model's vocabulary).
- baseline: the same motif placed by hand (the template at its default bond length; for a 2D net the stacking
  period c drawn uniformly in the inpainting's c range, for pyrochlore the template's own cell), and the other
  atoms, crystal by crystal the same counts and elements as ours, placed uniformly at random with a
  minimum-distance rule (>= 1.8 A to every atom, periodic; up to 1000 tries per atom, then a fresh c; after
  50 restarts the rule drops by 0.1 A, recorded per crystal). Written as candidates.jsonl with the same
  constraint record (``tools.sample.motif_exact_record``).

Reported per arm: motif exact (end of sampling / placement), motif retained after relaxation (of the relaxed),
stable (E_hull <= 0.1 eV/atom, CHGNet), on/below hull (<= 0), S.U.N., S.U.N.-C, CPU seconds end to end and
S.U.N.-C per CPU-hour (yield); per case the ratio of yields (ours / baseline) and the one-sided
two-proportion z-test p-value for the S.U.N.-C rate (``tools.measures.two_proportion_z_test``).

CPU time: ``time.process_time()`` of this process (sampling, with its torch threads, model and CHGNet loading,
hull, analysis) plus ``resource.getrusage(RUSAGE_CHILDREN)`` deltas, which count the Dask worker processes
once their LocalCluster is shut down and they are reaped (each evaluation opens and closes its own). With
``--workers 0`` everything runs in this process. Wall seconds are recorded beside.

Run:  .venv/bin/python benchmarks/bench_motifs.py [--cases kagome-Mn,honeycomb-Fe,...] [--n 256] [--seed 0]
      [--steps 0] [--workers 2] [--work scratch/bench_motifs] [--out benchmarks/results/motifs.json]
Resume: each arm's numbers land in ``<work>/<case>/<arm>/metrics.json`` once its evaluation is complete; a
rerun with the same --work skips those arms (and a half-done evaluation resumes from its relaxation journal).
Progress bars go to stderr, the table to stdout; the plot is written next to --out (same stem, .png).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # case: (lattice, motif element, free elements). Free sets: small, from the training vocabulary, chosen
    # after known families with such a net (kagome Mn3Sn/MnGe-type stannides and germanides; Fe honeycomb in
    # FeB2/FeGe-like layers; CoO2 triangular layers in LiCoO2/NaxCoO2; NiAs/NiGe-type square nets; Gd silicides,
    # germanides and borides; Mn pyrochlore = the B site of C15 Laves YMn2/ZrMn2-type and spinels).
    "kagome-Mn": ("kagome", "Mn", ("Sn", "Ge", "Ga", "In", "Si", "Al")),
    "honeycomb-Fe": ("honeycomb", "Fe", ("Ge", "Si", "Sn", "B", "P", "Al")),
    "triangular-Co": ("triangular", "Co", ("Li", "Na", "O", "S", "Se", "Te")),
    "square-Ni": ("square", "Ni", ("Ge", "As", "P", "Si", "B", "La")),
    "lieb-Gd": ("lieb", "Gd", ("Si", "Ge", "Sn", "B", "C", "N")),
    "pyrochlore-Mn": ("pyrochlore", "Mn", ("Y", "Zr", "Hf", "Sc", "Ti", "Mg")),
}
DEFAULT_CASES = ",".join(CASES)
MIN_DISTANCE = 1.8  # A, the baseline's placement rule
ARMS = ("ours", "baseline")


def cpu_seconds() -> float:
    """CPU s of this process plus its reaped children (the Dask workers after their cluster closes)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


# --------------------------------------------------------------------------------------------------------------
# the baseline: motif by hand, the rest uniformly at random


def _min_periodic_distance(lattice: Any, frac: np.ndarray, point: np.ndarray) -> float:
    """Smallest periodic distance (A) from ``point`` (fractional, (3,)) to the sites ``frac`` ((k, 3))."""
    if len(frac) == 0:
        return math.inf
    d = frac - point
    d -= np.round(d)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    cart = (d[:, None, :] + shifts[None, :, :]) @ lattice.matrix  # (k, 27, 3)
    return float(np.sqrt((cart ** 2).sum(-1)).min())


PLACEMENT_TRIES = 1000  # uniform points tried per free atom before a restart


def _first_free_point(lattice: Any, frac: np.ndarray, rule: float, rng: np.random.Generator) -> np.ndarray | None:
    """The first of up to PLACEMENT_TRIES uniform points (fractional) at >= ``rule`` A from every site, or None.

    Draw for draw the same as trying ``rng.random(3)`` one at a time (the generator is rewound and advanced
    by exactly the draws a one-by-one loop would have used), but the distances of all tries are one array
    operation: a crowded cell costs milliseconds per atom, not seconds."""
    state = rng.bit_generator.state
    points = rng.random((PLACEMENT_TRIES, 3))
    d = frac[None, :, :] - points[:, None, :]  # (T, k, 3)
    d -= np.round(d)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    cart = (d[:, :, None, :] + shifts[None, None, :, :]) @ lattice.matrix  # (T, k, 27, 3)
    nearest = np.sqrt((cart ** 2).sum(-1)).min(axis=(1, 2))  # (T,)
    ok = np.flatnonzero(nearest >= rule)
    if len(ok) == 0:
        return None
    j = int(ok[0])
    rng.bit_generator.state = state
    rng.bit_generator.advance(3 * (j + 1))  # one 64-bit draw per double
    # advance() drops the generator's buffered 32-bit half-draw, which doubles never touch but a later
    # shuffle would: put it back, so every later draw matches the one-by-one loop too
    after = rng.bit_generator.state
    after.update(has_uint32=state["has_uint32"], uinteger=state["uinteger"])
    rng.bit_generator.state = after
    return points[j]


def place_baseline(template: Any, element: str, bond_length: float, c_range: tuple[float, float],
                   free_species: list[str], rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
    """The net at ``bond_length`` plus ``free_species`` at uniform random positions (min-distance rule).

    Returns (pymatgen Structure, placement record: c, minimum distance used, restarts)."""
    from pymatgen.core import Structure

    rule = MIN_DISTANCE
    restarts = 0
    while True:
        c = float(rng.uniform(*c_range)) if template.dims == 2 else None
        net = template.structure(element, bond_length=bond_length, c=c)
        frac = np.array(net.frac_coords, dtype=float)
        placed: list[np.ndarray] = []
        ok = True
        for _ in free_species:
            p = _first_free_point(net.lattice, np.vstack([frac, *placed]) if placed else frac, rule, rng)
            if p is None:
                ok = False
                break
            placed.append(p)
        if ok:
            species = [element] * len(frac) + list(free_species)
            coords = np.vstack([frac, *placed]) if placed else frac
            s = Structure(net.lattice, species, coords)
            return s, {"c": net.lattice.c, "min_distance": rule, "restarts": restarts}
        restarts += 1
        if restarts % 50 == 0:
            rule = round(rule - 0.1, 2)


def write_baseline(case: str, ours_dir: Path, out_dir: Path, seed: int, case_index: int) -> dict[str, Any]:
    """Baseline crystals matching ``ours_dir``'s compositions, written as ``out_dir/candidates.jsonl``."""
    from tessera.generators.inpainting import MotifConstraint
    from tessera.tools.candidate import Candidate
    from pymatgen.core import Composition
    from tessera.tools.sample import motif_exact_record
    from tessera.tools.spec import MotifSpec

    lattice, element, _free = CASES[case]
    motif = MotifSpec(lattice=lattice, element=element)
    constraint = MotifConstraint.build(lattice=lattice, element=element)
    template = motif.template()
    k = template.num_sites
    rng = np.random.default_rng([seed, case_index, 7919])
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    n_rule_relaxed = 0
    for i, line in enumerate((ours_dir / "candidates.jsonl").read_text().splitlines()):
        # the composition from the record (not the CIF), so a crystal the pipeline cannot read still has a twin
        record = json.loads(line)
        reduced = Composition(record["formula"])  # the reduced formula: scaled to the record's atom count
        composition = reduced * (int(record["n_atoms"]) / reduced.num_atoms)
        free = [el.symbol for el, amt in composition.items() for _ in range(int(round(amt)))]
        for _ in range(k):
            free.remove(element)  # the inpainted net: exactly k atoms of the motif element
        rng.shuffle(free)
        structure, placement = place_baseline(template, element, constraint.bond_length, constraint.c_range, free, rng)
        n_rule_relaxed += placement["min_distance"] < MIN_DISTANCE
        record = motif_exact_record(structure, motif, constraint)
        c = Candidate.from_structure(structure, id=f"base-s{seed}-{i:05d}", source=f"baseline:{case}")
        records.append({"id": c.id, "formula": c.formula, "n_atoms": c.n_atoms, "cif": c.cif, "seed": seed,
                        "index": i, "constraints": record, "placement": placement})
    with open(out_dir / "candidates.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return {"n": len(records), "n_min_distance_relaxed": int(n_rule_relaxed)}


# --------------------------------------------------------------------------------------------------------------
# one arm through the pipeline


def arm_metrics(result: Any, n: int) -> dict[str, Any]:
    """Counts from an EvaluateFilesResult (``n``: crystals asked for, the denominator of every rate)."""
    cands = result.candidates
    cons = result.constraints
    stable = sum(bool(c.stable) for c in cands)
    le0 = sum(c.e_hull is not None and c.e_hull <= 0.0 for c in cands)
    sun_c = [c for c in cands if c.provenance.get("constraints_satisfied") and c.stable and c.unique and c.novel]
    m = {
        "n": n,
        "n_inputs": result.summary.n_inputs,
        "n_errors": result.summary.n_errors,
        "n_prescreen_passed": result.summary.n_prescreen_passed,
        "n_motif_exact": cons.n_motif_exact if cons else 0,
        "n_relaxed": cons.n_relaxed if cons else result.summary.n_relaxed,
        "n_motif_retained": cons.n_motif_retained if cons else 0,
        "n_stable": stable,
        "n_stable_le0": le0,
        "n_sun": result.summary.n_sun,
        "n_sun_c": cons.n_sun_c if cons else 0,
        "sun_c_ids": [c.id for c in sun_c],
        # the stricter levels (issue 16): confirmed = CHGNet and SevenNet both within the threshold (0 when the
        # run had no --confirm); prototype-novel = no match in the pool even with species ignored
        "n_confirmed": result.summary.n_confirmed,
        "n_sun_confirmed": result.summary.n_sun_confirmed,
        "n_sun_c_confirmed": sum(bool(c.confirmed) for c in sun_c),
        "n_sun_c_confirmed_prototype": sum(bool(c.confirmed and c.novel_prototype) for c in sun_c),
        "n_implausible_sun_c": sum(c.plausible is False for c in sun_c),
    }
    m["sun_c_formulas"] = [c.formula for c in sun_c]
    return m


def evaluate_arm(folder: Path, out: Path, workers: int | None, progress: Any, label: str,
                 confirm: str | None = None) -> Any:
    from tessera.tools.evaluate import EvaluateFilesParams, EvaluateParams, evaluate_files

    task = progress.add_task(f"{label}: evaluate", total=None)

    def on_step(step: Any) -> None:
        progress.update(task, total=step.total)
        if step.stage in ("relax", "done"):
            progress.advance(task)

    try:
        return evaluate_files(EvaluateFilesParams(paths=[folder], out=out,
                                                  evaluate=EvaluateParams(gate=True, workers=workers,
                                                                                confirm=confirm)),
                              on_step=on_step)
    finally:
        progress.remove_task(task)


def run_case(case: str, case_index: int, args: argparse.Namespace, work: Path, progress: Any) -> dict[str, Any]:
    from tessera.tools.sample import SampleParams, sample_crystals
    from tessera.tools.spec import MotifSpec

    lattice, element, free = CASES[case]
    case_dir = work / case
    out: dict[str, Any] = {"case": case, "lattice": lattice, "element": element, "free_elements": list(free)}
    for arm in ARMS:
        arm_dir = case_dir / arm
        metrics_path = arm_dir / "metrics.json"
        if metrics_path.exists():
            out[arm] = json.loads(metrics_path.read_text())
            out[arm]["resumed"] = True
            continue
        sample_dir = arm_dir / "sample"
        eval_dir = arm_dir / "eval"
        gen_path = arm_dir / "generate.json"
        if gen_path.exists():  # sampling (or placement) already done in an earlier run: keep its cost
            gen = json.loads(gen_path.read_text())
        else:
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            task = progress.add_task(f"{case}: {'sample' if arm == 'ours' else 'place baseline'}", total=None)
            if arm == "ours":
                params = SampleParams(out=sample_dir, n=args.n, seed=args.seed, elements=[element, *free],
                                      n_elements=args.n_elements, steps=args.steps,
                                      motif=MotifSpec(lattice=lattice, element=element))
                res = sample_crystals(params, on_warning=lambda w: progress.console.print(f"[yellow]{w}"))
                extra = {"sample_seconds": res.seconds, "sampler": res.sampler, "warnings": res.warnings}
            else:
                extra = write_baseline(case, case_dir / "ours" / "sample", sample_dir, args.seed, case_index)
            progress.remove_task(task)
            gen = {"cpu_seconds": cpu_seconds() - cpu0, "wall_seconds": time.perf_counter() - wall0, **extra}
            gen_path.write_text(json.dumps(gen, indent=1) + "\n")
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        result = evaluate_arm(sample_dir, eval_dir, args.workers, progress, f"{case} {arm}", confirm=args.confirm)
        ev_cpu, ev_wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        m = arm_metrics(result, args.n)
        # motif exact as recorded at the end of sampling / placement (a crystal the pipeline cannot read still
        # counts); the evaluation's own count (readable crystals only) is kept beside
        m["n_motif_exact_evaluated"] = m["n_motif_exact"]
        m["n_motif_exact"] = sum(bool(json.loads(line).get("constraints", {}).get("motif_exact"))
                                 for line in (sample_dir / "candidates.jsonl").read_text().splitlines())
        cpu = gen["cpu_seconds"] + ev_cpu
        m.update({"generate_cpu_seconds": gen["cpu_seconds"], "generate_wall_seconds": gen["wall_seconds"],
                  "evaluate_cpu_seconds": ev_cpu, "evaluate_wall_seconds": ev_wall, "cpu_seconds": cpu,
                  "wall_seconds": gen["wall_seconds"] + ev_wall,
                  "sun_c_per_cpu_hour": m["n_sun_c"] / (cpu / 3600.0) if cpu > 0 else 0.0,
                  "sun_c_confirmed_per_cpu_hour": m["n_sun_c_confirmed"] / (cpu / 3600.0) if cpu > 0 else 0.0,
                  "generate": {k: v for k, v in gen.items() if k not in ("cpu_seconds", "wall_seconds")}})
        metrics_path.write_text(json.dumps(m, indent=1) + "\n")
        out[arm] = m
    from tessera.tools.measures import two_proportion_z_test

    o, b = out["ours"], out["baseline"]
    test = two_proportion_z_test(o["n_sun_c"], o["n"], b["n_sun_c"], b["n"])
    out["sun_c_test"] = test.model_dump(mode="json")
    # None when the baseline found no S.U.N.-C crystal (the ratio is then unbounded or undefined; see the counts)
    out["yield_ratio"] = (o["sun_c_per_cpu_hour"] / b["sun_c_per_cpu_hour"] if b["sun_c_per_cpu_hour"] > 0
                          else None)
    out["yield_ratio_confirmed"] = (o["sun_c_confirmed_per_cpu_hour"] / b["sun_c_confirmed_per_cpu_hour"]
                                    if b.get("sun_c_confirmed_per_cpu_hour") else None)
    return out


# --------------------------------------------------------------------------------------------------------------
# report


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.0f}%)" if n else f"{k}/0"


def table(cases: list[dict[str, Any]]) -> str:
    head = ("| case | arm | motif exact | retained (of relaxed) | stable (0.1) | E_hull <= 0 | S.U.N. | S.U.N.-C "
            "| S.U.N.-C confirmed | CPU s | S.U.N.-C / CPU-h | ratio | p (S.U.N.-C) |")
    lines = [head, "|" + "---|" * 13]
    for c in cases:
        for arm in ARMS:
            m = c[arm]
            ratio = c["yield_ratio"]
            p = c["sun_c_test"]["p_value"]
            none = "inf" if m["n_sun_c"] else "-"
            last = (f"{none if ratio is None else f'{ratio:.2f}x'} | "
                    f"{'-' if p is None else f'{p:.3g}'}") if arm == "ours" else " | "
            lines.append(f"| {c['case']} | {arm} | {_pct(m['n_motif_exact'], m['n'])} | "
                         f"{_pct(m['n_motif_retained'], m['n_relaxed'])} | {_pct(m['n_stable'], m['n'])} | "
                         f"{_pct(m['n_stable_le0'], m['n'])} | {_pct(m['n_sun'], m['n'])} | "
                         f"{_pct(m['n_sun_c'], m['n'])} | {_pct(m.get('n_sun_c_confirmed', 0), m['n'])} | "
                         f"{m['cpu_seconds']:.0f} | {m['sun_c_per_cpu_hour']:.2f} | "
                         f"{last} |")
    return "\n".join(lines)


def plot(cases: list[dict[str, Any]], path: Path, n: int) -> None:
    """Per case, the funnel as counts of ``n`` on a symmetric-log axis (the later stages are a few crystals
    in 256, invisible as shares): exact, passed the gate (relaxed), net retained, stable, S.U.N.-C, confirmed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("n_motif_exact", "exact"), ("n_relaxed", "passed\ngate"), ("n_motif_retained", "net\nretained"),
            ("n_stable", "stable\n(0.1)"), ("n_sun_c", "S.U.N.-C"), ("n_sun_c_confirmed", "S.U.N.-C\nconfirmed")]
    cols = min(3, len(cases))
    rows = math.ceil(len(cases) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False, sharey=True)
    x = np.arange(len(keys))
    for ax, c in zip(axes.flat, cases):
        for j, (arm, color) in enumerate(zip(ARMS, ("tab:blue", "tab:gray"))):
            vals = [c[arm].get(k, 0) for k, _ in keys]
            bars = ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=arm, color=color)
            ax.bar_label(bars, fontsize=6, padding=1)
        ax.set_xticks(x, [lab for _, lab in keys], fontsize=7)
        ax.set_title(c["case"], fontsize=10)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, n * 2)
    for ax in axes.flat[len(cases):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel(f"crystals of {n} (symlog)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Motif inpainting vs hand-placed motif + random atoms (n = {n} per arm; gated pipeline, CHGNet, "
                 f"then SevenNet-0 on hits)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated, from {DEFAULT_CASES}")
    ap.add_argument("--n", type=int, default=256, help="crystals per case and arm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="reverse steps (0: configs/sampler.yaml)")
    ap.add_argument("--n-elements", type=int, default=0, help="distinct elements per crystal (0: from the data)")
    ap.add_argument("--workers", type=int, default=None, help="Dask relaxation workers (default one per core; 0 serial)")
    ap.add_argument("--confirm", choices=["sevennet"], default=None,
                    help="re-relax CHGNet's stable hits with the second judge (counts at the confirmed level)")
    ap.add_argument("--work", type=Path, default=ROOT / "scratch" / "bench_motifs", help="per-case folders (resume)")
    ap.add_argument("--out", type=Path, default=RESULTS / "motifs.json")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; known: {DEFAULT_CASES}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = []
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        overall = progress.add_task("cases", total=len(cases))
        for case in cases:
            results.append(run_case(case, list(CASES).index(case), args, work, progress))
            progress.advance(overall)
            # partial results after every case, so a killed run still leaves its numbers
            write_report(args, results, time.perf_counter() - t0, final=False)
    write_report(args, results, time.perf_counter() - t0, final=True)
    print(table(results))
    for c in results:
        o, b = c["ours"], c["baseline"]
        print(f"{c['case']}: yield {o['sun_c_per_cpu_hour']:.2f} vs {b['sun_c_per_cpu_hour']:.2f} S.U.N.-C/CPU-h; "
              f"CPU {o['cpu_seconds']:.0f} s (sampling {o['generate_cpu_seconds']:.0f}) vs {b['cpu_seconds']:.0f} s")
    print(f"wall {time.perf_counter() - t0:.0f} s; wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def write_report(args: argparse.Namespace, results: list[dict[str, Any]], wall: float, *, final: bool) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "motif inpainting (ours) vs hand-placed motif + uniform random atoms (baseline), gated pipeline, "
                "CHGNet-evaluated",
        "command": " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cases_defined": {k: {"lattice": v[0], "element": v[1], "free_elements": list(v[2])} for k, v in CASES.items()},
        "baseline_rule": f"template at its default bond length, c uniform in the inpainting c range (2D), free "
                         f"atoms uniform with min distance >= {MIN_DISTANCE} A (lowered by 0.1 A per 50 restarts)",
        "cpu_time": "time.process_time() + RUSAGE_CHILDREN (Dask workers, counted once their cluster closes); "
                    "ours includes loading the generator, both include loading CHGNet",
        "complete": final,
        "wall_seconds": wall,
        "results": results,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if results:
        plot(results, args.out.with_suffix(".png"), args.n)


if __name__ == "__main__":
    sys.exit(main())
