"""Every script in benchmarks/ still runs: each once, as a subprocess, with the tiniest setting that still
goes through its real path (the shipped generator, CHGNet, the reference hull, Dask, the store), writing
only into ``tmp_path``. The numbers are not judged here (a 5-step sampler makes nonsense crystals); what is
checked is the exit status, the result file's keys, and that benchmarks/results/ is left as it was.

The scripts that load the generator or CHGNet take 20-60 s each on two busy cores (loading the
generator alone costs ~20 s); they carry the ``slow`` mark but run in the default suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tessera.tools.candidate import Candidate, StageOutcome

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
COMMITTED = BENCHMARKS / "results"


def run_benchmark(script: str, *args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script>.py args...`` from the repository, offline; fails the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *map(str, args)],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def read_json(path: Path) -> Any:
    assert path.exists(), f"{path} was not written"
    return json.loads(path.read_text())


def _committed_state() -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in COMMITTED.iterdir()}


@pytest.fixture(autouse=True)
def committed_results_untouched() -> Iterator[None]:
    """No smoke run may write into benchmarks/results/ (the measured numbers the README cites)."""
    before = _committed_state()
    yield
    assert _committed_state() == before, "a benchmark smoke run wrote into benchmarks/results/"


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny bench_generator run with evaluation (2 crystals, 5 steps, serial CHGNet): (result JSON, stdout)."""
    tmp = tmp_path_factory.mktemp("bench_generator")
    out = tmp / "generator.json"
    before = _committed_state()  # module scope: set up before the per-test check, so it checks itself
    proc = run_benchmark(
        "bench_generator", "--n", 2, "--steps", 5, "--type-reveal-power", 1, "--spread-seeds", 0, "--no-baselines",
        "--recon-t", 5, "--eval-workers", 0, "--relax-max-seconds", 30, "--out", out, "--work", tmp / "work",
    )
    assert _committed_state() == before, "bench_generator wrote into benchmarks/results/"
    return out, proc.stdout


@pytest.mark.slow
def test_bench_generator(generator_run: tuple[Path, str]) -> None:
    out, stdout = generator_run
    result = read_json(out)
    assert {"checkpoint", "seed", "sampler", "speed", "model", "reconstruction_by_t", "plot", "anchors_published"} <= set(result)
    # The sampler settings come from configs/sampler.yaml through the sample tool, with the command's overrides.
    assert result["sampler"]["num_steps"] == 5
    assert result["sampler"]["type_reveal_power"] == 1.0
    assert result["speed"]["n"] == 2 and result["speed"]["batch_size"] >= 1
    model = result["model"]
    assert model["n"] == 2 and 0.0 <= model["structural_validity"] <= 1.0
    evaluation = model["evaluation"]
    assert evaluation["n_inputs"] == 2 and evaluation["n_evaluated"] == 2
    assert {"n_stable", "n_sun", "n_sun_prescreen_passed", "stable_rate_over_all", "sun_rate_over_all"} <= set(evaluation)
    assert [r["t"] for r in result["reconstruction_by_t"]] == [5]
    assert out.with_suffix(".png").exists()
    assert (out.parent / "work" / "model" / "eval" / "candidates.jsonl").exists()
    assert f"wrote {out}" in stdout


def test_compare_generator_runs_on_committed_results(tmp_path: Path) -> None:
    """The docstring's own example, on the committed result files (read only)."""
    out = tmp_path / "paired.json"
    proc = run_benchmark(
        "compare_generator_runs",
        "--a", COMMITTED / "stage5_steps1000_seed0.json", COMMITTED / "stage5_steps1000_seed5.json", "--a-name", "1000 steps",
        "--b", COMMITTED / "generator.json", COMMITTED / "stage5_budget_seed5_p3.json", "--b-name", "shipped",
        "--out", out,
    )
    table = read_json(out)
    assert table["n_a"] > 0 and table["n_b"] > 0
    assert "S.U.N." in [row["measure"] for row in table["rows"]]
    assert "| 1000 steps | shipped | z |" in proc.stdout


@pytest.mark.slow
def test_compare_generator_runs_reads_a_fresh_bench_generator_result(generator_run: tuple[Path, str], tmp_path: Path) -> None:
    """What bench_generator writes today is what compare_generator_runs reads."""
    result, _ = generator_run
    out = tmp_path / "paired.json"
    run_benchmark("compare_generator_runs", "--a", result, "--b", result, "--out", out)
    table = read_json(out)
    assert table["n_a"] == table["n_b"] == 2
    assert all(row["k_a"] == row["k_b"] for row in table["rows"])


def test_bench_prescreen(tmp_path: Path) -> None:
    """Four evaluated candidates with known verdicts: the ceiling sweep's shares are exact."""
    def cand(unrelaxed: float, sun: bool, geometry: bool) -> Candidate:
        return Candidate(
            prescreen={"charge": StageOutcome(passed=True), "geometry": StageOutcome(passed=geometry),
                       "ehull": StageOutcome(passed=unrelaxed <= 1.0, value=unrelaxed)},
            relaxed=True, relax_seconds=2.0, e_hull=0.0 if sun else 0.5, stable=sun, unique=True, novel=True,
        )

    jsonl = tmp_path / "candidates.jsonl"
    jsonl.write_text("".join(c.model_dump_json() + "\n" for c in
                             [cand(0.2, True, True), cand(0.6, True, True), cand(1.6, False, True), cand(4.0, False, False)]))
    out = tmp_path / "prescreen.json"
    proc = run_benchmark("bench_prescreen", jsonl, "--out", out)
    result = read_json(out)
    assert result["n_candidates"] == 4 and result["n_sun"] == 2
    assert result["stages"]["geometry"] == {"pass_all": 0.75, "pass_sun": 1.0}
    by_ceiling = {row["ceiling_ev_atom"]: row for row in result["ceiling_sweep"]}
    assert by_ceiling[0.5]["kept"] == 0.25 and by_ceiling[0.5]["sun_recall"] == 0.5
    assert by_ceiling[0.5]["relax_time_share"] == 0.25 and by_ceiling[0.5]["hits_per_relax_hour_vs_all"] == 2.0
    assert by_ceiling[None]["kept"] == 1.0 and by_ceiling[None]["sun_recall"] == 1.0
    assert out.with_suffix(".png").exists()
    assert "4 candidates, 2 S.U.N. hits" in proc.stdout


@pytest.mark.slow
def test_bench_hull(tmp_path: Path) -> None:
    """One known and one random crystal through CHGNet and the four hull schemes; the cache lets a rerun resume."""
    out, cache = tmp_path / "hull.json", tmp_path / "hull_relaxations.jsonl"
    run_benchmark("bench_hull", "--n-known", 1, "--n-random", 1, "--max-atoms", 8, "--max-seconds", 10,
                  "--out", out, "--cache", cache)
    report = read_json(out)
    assert {"schemes", "done_criteria", "relaxation", "sample", "items"} <= set(report)
    assert len(report["schemes"]) == 4
    assert report["sample"]["n_known"] == 1 and report["sample"]["n_random"] == 1
    assert [it["kind"] for it in report["items"]] == ["known", "random"]
    assert len(cache.read_text().splitlines()) == 2


@pytest.mark.slow
def test_bench_relax(tmp_path: Path) -> None:
    """One 10-atom and one 20-atom relaxation through a one-worker Dask cluster."""
    out = tmp_path / "relax.json"
    run_benchmark("bench_relax", "--n", 1, "--workers", 1, "--out", out)
    result = read_json(out)
    assert {"what", "inputs", "params", "runs", "ratios", "when"} <= set(result)
    assert [(r["workers"], r["n_atoms"], r["n"]) for r in result["runs"]] == [(1, 10, 1), (1, 20, 1)]
    assert all(r["failed"] == 0 and r["relaxations_per_min"] > 0 for r in result["runs"])


def test_bench_store(tmp_path: Path) -> None:
    """The real recording path (20 candidates) and one synthetic scale of 500 rows from 200 pool structures."""
    out = tmp_path / "store.json"
    run_benchmark("bench_store", "--sizes", 500, "--real", 20, "--batch", 10, "--synth-pool", 200,
                  "--workdir", tmp_path / "work", "--out", out)
    result = read_json(out)
    assert result["real_path"]["n"] == 20 and result["real_path"]["candidates_per_s"] > 0
    assert result["synthetic_pool_structures"] == 200
    [scale] = result["scale"]
    assert scale["rows"] == 500
    assert {"formula_top20_ms", "elements_ehull_top20_ms", "nn_exact_k10_ms", "bytes_per_1000"} <= set(scale)


@pytest.mark.slow
def test_bench_reveal_clock(tmp_path: Path) -> None:
    """Two crystals at one reveal power, 5 sampler steps."""
    out = tmp_path / "reveal_clock.json"
    run_benchmark("bench_reveal_clock", "--n", 2, "--powers", 1, "--set", "num_steps=5", "--out", out)
    result = read_json(out)
    assert result["overrides"] == {"num_steps": 5}
    [row] = result["results"]
    assert row["type_reveal_power"] == 1.0 and row["n"] == 2
    assert {"wdist_density_all", "wdist_n_elements_all", "wdist_density_set_mean"} <= set(row)


@pytest.mark.slow
def test_bench_motifs(tmp_path: Path) -> None:
    """One case (kagome-Mn), two crystals per arm, 5 sampler steps, serial CHGNet: both arms go through the
    pipeline, the baseline twins ours crystal by crystal, and the result and plot are written."""
    out = tmp_path / "motifs.json"
    proc = run_benchmark("bench_motifs", "--cases", "kagome-Mn", "--n", 2, "--steps", 5, "--workers", 0,
                         "--work", tmp_path / "work", "--out", out)
    result = read_json(out)
    assert {"what", "command", "params", "baseline_rule", "cpu_time", "complete", "results", "when"} <= set(result)
    assert result["complete"] is True and "--cases kagome-Mn" in result["command"]
    [case] = result["results"]
    assert case["case"] == "kagome-Mn" and {"ours", "baseline", "sun_c_test", "yield_ratio"} <= set(case)
    for arm in ("ours", "baseline"):
        m = case[arm]
        assert m["n"] == 2 and m["cpu_seconds"] > 0
        assert {"n_motif_exact", "n_relaxed", "n_motif_retained", "n_stable", "n_stable_le0", "n_sun", "n_sun_c",
                "sun_c_per_cpu_hour", "n_sun_c_confirmed", "sun_c_confirmed_per_cpu_hour"} <= set(m)
        assert m["n_sun_c_confirmed"] == 0  # no --confirm: nothing is confirmed
    assert case["baseline"]["n_motif_exact"] == 2  # the hand-placed net is the exact template
    assert (tmp_path / "motifs.png").exists() and "kagome-Mn" in proc.stdout


@pytest.mark.slow
def test_bench_levels_held_out(tmp_path: Path) -> None:
    """Two held-out MP crystals through CHGNet then SevenNet (serial): every level is counted, each stricter
    level is a subset of the looser one, SevenNet re-relaxed exactly CHGNet's stable ones, and a rerun resumes."""
    out = tmp_path / "levels.json"
    args = ("--sets", "held_out", "--n", 2, "--workers", 0, "--work", tmp_path / "work", "--out", out)
    proc = run_benchmark("bench_levels", *args)
    m = read_json(out)["results"]["held_out"]
    assert m["n"] == 2 and m["n_evaluated"] == 2
    assert m["n_confirmed"] <= m["n_stable"] and m["n_sun_confirmed"] <= m["n_sun"] <= m["n_stable"]
    assert m["n_sun_confirmed_prototype"] <= m["n_sun_confirmed"] <= m["n_confirmed"]
    assert m["n_confirm_relaxations"] == m["n_stable"]
    assert "confirmed (both <= 0.1)" in proc.stdout and (tmp_path / "levels.png").exists()
    again = run_benchmark("bench_levels", *args)
    assert read_json(out)["results"]["held_out"]["resumed"] is True and again.stdout.count("held_out") >= 1
