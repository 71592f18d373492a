"""Which type-reveal clock matches the data best? Property distances of the shipped model's samples per p.

For each p in --powers, samples --n crystals (seed --seed) with configs/sampler.yaml but
type_reveal_power = p, and prints the Wasserstein distances of density (g/cm^3) and of the number of
elements to the test split: over all n, and the mean over n/256 disjoint sets of 256 (the size the
[generator] target is stated on). No relaxation: S.U.N. per p needs bench_generator.py with
--sampler-config. `--set KEY=VALUE` (repeatable) overrides any other sampler setting for every row,
e.g. `--set element_budget=true`. Writes benchmarks/results/reveal_clock.json (or --out).

Run: .venv/bin/python benchmarks/bench_reveal_clock.py [--n 1024] [--powers 1,2,3] [--seed 11] [--set K=V]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from tessera.generators.convert import to_structures
from tessera.generators.model import load_weights
from tessera.generators.sampler import SamplerConfig, parse_overrides, sample_many
from tessera.tools.measures import property_distances
from tessera.tools.paths import CONFIG_DIR, REPO_ROOT, repo_relative
from tessera.tools.pool import load_pool, row_to_structure

SET_SIZE = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--powers", default="1,2,3")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "data" / "checkpoints" / "generator.pt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="sampler setting for every row (YAML value), e.g. element_budget=true")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "reveal_clock.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scfg = yaml.safe_load((CONFIG_DIR / "sampler.yaml").read_text())
    batch_size = int(scfg.pop("batch_size", 128))
    try:
        overrides = parse_overrides(args.set)
        base = SamplerConfig.from_dict({**scfg, **overrides})
    except ValueError as err:
        ap.error(f"--set: {err}")
    model = load_weights(args.checkpoint)
    reference = [row_to_structure(r) for _, r in load_pool("test").iterrows()]
    rows = []
    for p in [float(x) for x in args.powers.split(",")]:
        batches = sample_many(model=model, config=replace(base, type_reveal_power=p), n=args.n, seed=args.seed,
                              batch_size=batch_size)
        structures = [s for b in batches for s in to_structures(b, model.vocab)]
        whole = property_distances(structures, reference)
        n_sets = max(1, len(structures) // SET_SIZE)
        sets = [property_distances(structures[i::n_sets], reference) for i in range(n_sets)]
        row = {
            "type_reveal_power": p,
            "n": len(structures),
            "wdist_density_all": whole.wdist_density,
            "wdist_n_elements_all": whole.wdist_n_elements,
            "wdist_density_per_set": [d.wdist_density for d in sets],
            "wdist_density_set_mean": float(np.mean([d.wdist_density for d in sets])),
            "wdist_n_elements_set_mean": float(np.mean([d.wdist_n_elements for d in sets])),
        }
        rows.append(row)
        print(f"p={p:g}: density W1 {row['wdist_density_all']:.3f} (sets of {SET_SIZE}: "
              f"{row['wdist_density_set_mean']:.3f}), element-count W1 {row['wdist_n_elements_all']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": repo_relative(args.checkpoint), "seed": args.seed,
                                               "overrides": overrides, "results": rows},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
