"""Tuned vs default guidance strengths on the same budget and a fresh seed (issue 18), through tools/tune.py.

For each case (a DesignSpec from benchmarks/bench_guidance.py CASES, e.g. boron at 7.0 A^3/atom and Li-Co-O
with Co-O coordination 4):

1. tune: a ``yield`` study (tools.tune.tune) of ``--trials`` trials; each samples ``--pilot`` crystals at
   ``--steps`` reverse steps with the spec's seed (``--seed``), gates them with the prescreen, relaxes at most
   ``--relax`` best-first (CHGNet, in this process) and scores S.U.N.-C per CPU-second. The study's first trial
   is the spec's own values (configs/guidance.yaml, configs/prescreen.yaml): the default on the tuning seed.
2. compare: on fresh seeds (``--eval-seeds``, not the tuning seed) the default and the tuned strengths each run
   the same budget, ``--eval-n`` crystals at ``--steps`` with at most ``--eval-relax`` relaxations
   (tools.tune.run_pilot, the trials' own code), one arm after the other on the same seed.

Printed per case: the tuned values, and per arm on the fresh seeds S.U.N.-C, CPU seconds, S.U.N.-C per
CPU-hour (pooled over the seeds: total S.U.N.-C / total CPU-hours) and the constraint share. S.U.N.-C is at
the CHGNet level (E_hull <= 0.1 eV/atom, no second judge). CPU time is ``time.process_time`` of this
process (sampling, prescreen, relaxation, assessment), which a loaded machine disturbs less than wall time.

A killed run resumes: each study lives in ``<work>/<case>.sqlite3`` and adds only the trials it lacks; finished
cases of the same settings are kept in the output file.

Run: nice -n 10 .venv/bin/python benchmarks/bench_tune.py [--cases licoo_cn4,boron] [--trials 12] [--pilot 8]
     [--steps 100] [--relax 4] [--eval-n 8] [--eval-relax 4] [--eval-seeds 101,102] [--seed 0]
     [--work runs/bench_tune] [--out benchmarks/results/tune.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guidance import CASES  # noqa: E402

from tessera.tools.paths import REPO_ROOT, repo_relative  # noqa: E402
from tessera.tools.spec import parse_spec  # noqa: E402
from tessera.tools.tune import TuneParams, open_storage, run_pilot, tune  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "tune.json"
SETTINGS = ("trials", "pilot", "steps", "relax", "eval_n", "eval_relax", "eval_seeds", "seed", "relax_steps")


def _existing_trials(storage_url: str, study: str) -> int:
    import optuna

    storage = open_storage(storage_url)
    names = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    if study not in names:
        return 0
    return len(optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False))


def _arm(spec: Any, values: dict[str, Any], seeds: list[int], args: argparse.Namespace, work: Path, hull: Any) -> dict[str, Any]:
    """One arm (default or tuned strengths) on every fresh seed: per-seed outcomes and the pooled yield."""
    runs = []
    for seed in seeds:
        fresh = spec.model_copy(update={"seed": seed})
        out = run_pilot(fresh, values, objective="yield", n=args.eval_n, steps=args.steps, relax=args.eval_relax,
                        out=work / f"seed{seed}", hull=hull, relax_steps=args.relax_steps, threads=args.threads)
        runs.append({"seed": seed, **out.model_dump(exclude={"stopped_after_sampling"})})
        print(f"    seed {seed}: {out.n_sun_c} S.U.N.-C of {out.n_pilot} ({out.n_met} meet the spec, {out.n_relaxed} "
              f"relaxed) in {out.cpu_seconds:.1f} CPU s", flush=True)
    n_sun_c = sum(r["n_sun_c"] or 0 for r in runs)
    cpu = sum(r["cpu_seconds"] for r in runs)
    n = sum(r["n_pilot"] for r in runs)
    return {"values": values, "runs": runs, "n": n, "n_met": sum(r["n_met"] for r in runs),
            "share": sum(r["n_met"] for r in runs) / n if n else None, "n_relaxed": sum(r["n_relaxed"] or 0 for r in runs),
            "n_sun": sum(r["n_sun"] or 0 for r in runs), "n_sun_c": n_sun_c, "cpu_seconds": cpu,
            "sun_c_per_cpu_hour": 3600.0 * n_sun_c / cpu if cpu > 0 else 0.0}


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from tessera.tools.hull import ReferenceHull

    t0 = time.perf_counter()
    spec = parse_spec({**CASES[name], "budgets": {"samples": args.pilot}, "seed": args.seed}, source=name)
    study = f"bench-{name}"
    args.work.mkdir(parents=True, exist_ok=True)
    params = TuneParams(spec=spec, trials=1, objective="yield", study=study, out=args.work, pilot=args.pilot,
                        steps=args.steps, relax=args.relax, relax_steps=args.relax_steps, seed=args.seed,
                        threads=args.threads)
    missing = args.trials - _existing_trials(params.storage_url(), study)
    print(f"{name}: tuning ({args.trials} trials, {max(missing, 0)} to run)", flush=True)

    def said(report: Any) -> None:
        value = f"{report.values[0] * 3600:.1f} S.U.N.-C/CPU-h" if report.values else report.state
        print(f"  trial {report.number}{' (default)' if report.baseline else ''}: {value}; share {report.share}, "
              f"S.U.N.-C {report.n_sun_c}, CPU {report.cpu_seconds:.1f} s", flush=True)

    result = tune(params.model_copy(update={"trials": max(missing, 0)}), on_trial=said)
    if result.chosen is None:
        return {"error": "no trial completed", "study": result.study}
    tuned_values = dict(result.chosen.params)
    print(f"{name}: chosen trial {result.chosen.trial}: {tuned_values}", flush=True)

    hull = ReferenceHull.default()
    seeds = [int(s) for s in args.eval_seeds.split(",")]
    print(f"{name}: fresh seeds {seeds}, default strengths", flush=True)
    default = _arm(spec, {}, seeds, args, args.work / name / "default", hull)
    base = result.baseline
    if base is not None and result.chosen.trial == base.number:  # a tie (e.g. all 0) keeps the spec's values
        tuned = default
        verdict = "tuned = default: no trial beat the spec's own values on the tuning seed"
    else:
        print(f"{name}: fresh seeds {seeds}, tuned strengths", flush=True)
        tuned = _arm(spec, tuned_values, seeds, args, args.work / name / "tuned", hull)
        verdict = ("tuned beats default" if tuned["sun_c_per_cpu_hour"] > default["sun_c_per_cpu_hour"] else
                   "tuned does not beat default")
    print(f"{name}: S.U.N.-C per CPU-hour on fresh seeds: default {default['sun_c_per_cpu_hour']:.1f} "
          f"({default['n_sun_c']} in {default['cpu_seconds']:.0f} s), tuned {tuned['sun_c_per_cpu_hour']:.1f} "
          f"({tuned['n_sun_c']} in {tuned['cpu_seconds']:.0f} s): {verdict}", flush=True)
    return {
        "spec": spec.model_dump(mode="json"), "study": result.study, "storage": result.storage,
        "n_trials": result.n_trials, "n_complete": result.n_complete, "n_pruned": result.n_pruned,
        "chosen": result.chosen.model_dump(mode="json"), "chosen_params": tuned_values,
        "tuning_seed": {"default_trial": base.model_dump(mode="json") if base is not None else None,
                        "chosen_sun_c_per_cpu_hour": result.chosen.values[0] * 3600.0},
        "fresh_seeds": {"seeds": seeds, "default": default, "tuned": tuned, "verdict": verdict},
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="licoo_cn4,boron", help=f"comma-separated, from {', '.join(CASES)}")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--pilot", type=int, default=8, help="crystals per trial")
    ap.add_argument("--steps", type=int, default=100, help="reverse steps (trials and the comparison)")
    ap.add_argument("--relax", type=int, default=4, help="relaxations per trial at most")
    ap.add_argument("--relax-steps", type=int, default=None, help="FIRE steps per relaxation (configs/relax.yaml)")
    ap.add_argument("--eval-n", type=int, default=8, help="crystals per fresh seed and arm")
    ap.add_argument("--eval-relax", type=int, default=4, help="relaxations per fresh seed and arm at most")
    ap.add_argument("--eval-seeds", default="101,102", help="fresh seeds (not the tuning seed)")
    ap.add_argument("--seed", type=int, default=0, help="the tuning seed (the spec's; also Optuna's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench_tune")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        print(f"error: unknown case(s) {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    if str(args.seed) in args.eval_seeds.split(","):
        print("error: --eval-seeds must not include the tuning --seed (the comparison is on fresh seeds)", file=sys.stderr)
        return 2
    settings = {k: getattr(args, k) for k in SETTINGS}
    result: dict[str, Any] = {"command": " ".join(sys.argv), **settings,
                              "note": "S.U.N.-C at the CHGNet level (E_hull <= 0.1 eV/atom); CPU = process time of "
                                      "sampling, prescreen, relaxation and assessment", "cases": {}}
    if args.out.exists():  # resume: keep finished cases of the same settings
        old = json.loads(args.out.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            result["cases"] = old.get("cases", {})
    for name in args.cases.split(","):
        if name in result["cases"]:
            continue
        result["cases"][name] = run_case(name, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    for name, case in result["cases"].items():
        fresh = case.get("fresh_seeds")
        if fresh:
            print(f"{name}: default {fresh['default']['sun_c_per_cpu_hour']:.1f} vs tuned "
                  f"{fresh['tuned']['sun_c_per_cpu_hour']:.1f} S.U.N.-C per CPU-hour ({fresh['verdict']})")
    print(f"wrote {repo_relative(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
