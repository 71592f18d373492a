"""tools/tune.py: the search space, the mapping of a trial to a spec, pruning, and real (tiny) studies.

Real components throughout: Optuna with a SQLite file in a temp folder, the shipped generator (a few reverse
steps), CHGNet, the shipped hull, a LanceDB store for the audit run.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from tessera.tools.errors import InputError
from tessera.tools.spec import DesignSpec, load_spec, parse_spec
from tessera.tools.tune import (
    ShareGate,
    TuneParams,
    TuneSpace,
    baseline_params,
    choose,
    load_tune_space,
    open_storage,
    open_study,
    tune,
    tuned_options,
    tuned_spec,
)

LICOO = {"chemistry": {"elements": ["Li", "Co", "O"], "n_elements": 3, "atoms": 8},
         "guidance": [{"kind": "coordination", "elements": ["Co", "O"], "cutoff": 2.6, "target": 4, "tolerance": 0.5}],
         "seed": 3}
BORON = {"chemistry": {"elements": ["B"], "n_elements": 1, "atoms": 6},
         "guidance": [{"kind": "volume_per_atom", "target": 7.0, "tolerance": 0.5}], "seed": 1}
NARROW = {"forward": [False, True], "scale": {"low": 0.5, "high": 0.7}, "backward_steps": {"low": 1, "high": 2},
          "backward_lr": {"low": 0.1, "high": 0.3, "log": True}, "recurrence": {"low": 1, "high": 2},
          "every": {"low": 2, "high": 3}, "schedule": ["increasing", "decreasing"],
          "release_below": {"low": 0.1, "high": 0.2}, "ehull_ceiling": {"low": 0.8, "high": 1.2},
          "sampler": {"n_startup_trials": 2}}


def test_shipped_space_loads_and_stays_within_the_guidance_limits() -> None:
    space = load_tune_space()
    assert space == TuneSpace.model_validate(yaml.safe_load(Path("configs/tune.yaml").read_text()))
    assert 0 <= space.backward_steps.low <= space.backward_steps.high <= 20
    assert 1 <= space.recurrence.low and space.recurrence.high <= 10 and space.every.low >= 1
    assert 0 <= space.release_below.low and space.release_below.high < 1


@pytest.mark.parametrize(("change", "needle"), [
    ({"recurrence": {"low": 0, "high": 3}}, "recurrence"),
    ({"backward_lr": {"low": 0.0, "high": 0.3, "log": True}}, "log range"),
    ({"every": {"low": 3, "high": 2}}, "low 3 > high 2"),
    ({"schedule": ["sideways"]}, "schedule"),
    ({"release_below": {"low": 0.0, "high": 1.0}}, "release_below"),
    ({"bogus": 1}, "unknown key 'bogus'"),
])
def test_bad_bounds_are_one_line_naming_the_file(tmp_path: Path, change: dict, needle: str) -> None:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump({**NARROW, **change}))
    with pytest.raises(InputError) as err:
        load_tune_space(path)
    assert str(path) in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)


def test_a_trial_maps_to_a_valid_spec() -> None:
    spec = parse_spec({**LICOO})
    params = {"forward": False, "backward_steps": 2, "backward_lr": 0.3, "recurrence": 1, "every": 2,
              "schedule": "increasing"}
    options = tuned_options(spec.guidance_options, params)
    assert (options.scale, options.backward_steps, options.backward_lr, options.recurrence, options.every,
            options.schedule) == (0.0, 2, 0.3, 1, 2, "increasing")
    assert tuned_options(spec.guidance_options, {**params, "forward": True, "scale": 0.8}).scale == 0.8
    motif = parse_spec({"chemistry": {"elements": ["Mn", "Sn"], "atoms": 6}, "motif": {"lattice": "kagome",
                                                                                       "element": "Mn"}})
    assert tuned_spec(motif, {"release_below": 0.25}).motif.release_below == 0.25
    assert tuned_spec(motif, {"release_below": 0.25}).guidance_options == motif.guidance_options  # no terms: as is


def test_the_baseline_is_the_specs_values_clipped_to_the_space() -> None:
    spec = parse_spec({**LICOO})  # configs/guidance.yaml: backward 3 steps, lr 0.2, K 3, every 1, constant
    space = TuneSpace.model_validate(NARROW)
    base = baseline_params(spec, space, ceiling=1.5)
    assert base == {"forward": False, "backward_steps": 2, "backward_lr": 0.2, "recurrence": 2, "every": 2,
                    "ehull_ceiling": 1.2}  # 'constant' is not a choice: left to Optuna


def test_share_gate_prunes_a_hopeless_share_before_relaxation() -> None:
    space = TuneSpace.model_validate({**NARROW, "pruning": {"min_share": 0.25, "percentile": 25.0,
                                                            "n_startup_trials": 2}})
    study = optuna.create_study(direction="maximize", pruner=ShareGate(space.pruning))
    pruned = []
    for share in (0.0, 0.5, 1.0, 0.55, 0.75):
        trial = study.ask()
        trial.report(share, step=0)
        pruned.append(trial.should_prune())
        if pruned[-1]:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, share)
    # 0.0 is under the floor; 0.5 and 1.0 finish (too few finished for the percentile rule); the bottom quarter of
    # the finished shares (0.5, 1.0) lies below 0.625: 0.55 is pruned there, 0.75 is kept (Optuna's own
    # percentile counts the other way: PercentilePruner(25) would keep only the top quarter and prune 0.75 too)
    assert pruned == [True, False, False, True, False]


def test_a_tie_keeps_the_specs_own_values() -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": True})
    for value in (0.0, 0.0, 0.0):  # every trial found no S.U.N.-C: nothing says the strengths should change
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, value)
    assert choose(study, "yield").number == 0
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.01)
    assert choose(study, "yield").number == 3


def test_a_study_made_for_other_settings_is_refused(tmp_path: Path) -> None:
    spec = parse_spec({**LICOO})
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    params = TuneParams(spec=spec, trials=1, objective="pareto", study="s", storage=url, pilot=2)
    open_study(params, open_storage(url))
    open_study(params, open_storage(url))  # the same settings: loads
    with pytest.raises(InputError, match="pilot differ"):
        open_study(params.model_copy(update={"pilot": 3}), open_storage(url))
    with pytest.raises(InputError, match="objective"):
        open_study(params.model_copy(update={"objective": "yield"}), open_storage(url))


def test_a_spec_with_nothing_to_tune_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing|no strengths"):
        tune(TuneParams(spec=DesignSpec(), trials=1, out=tmp_path))


def test_pareto_study_respects_the_bounds_saves_the_chosen_spec_and_records_the_run(tmp_path: Path) -> None:
    from tessera.store import Store

    store = Store.open(str(tmp_path / "store"))
    space = TuneSpace.model_validate(NARROW)
    saved = tmp_path / "tuned.json"
    seen = []
    result = tune(TuneParams(spec=parse_spec({**LICOO}), trials=4, objective="pareto", pilot=2, steps=5,
                             out=tmp_path / "tune", space=space, save_spec=saved, seed=0),
                  open_run=store.start_run, on_trial=seen.append)
    assert [t.number for t in seen] == [0, 1, 2, 3] and result.n_trials == result.n_complete == 4
    study = optuna.load_study(study_name=result.study, storage=result.params.storage_url())
    for t in study.trials:
        p = t.params
        assert space.backward_steps.low <= p["backward_steps"] <= space.backward_steps.high
        assert space.backward_lr.low <= p["backward_lr"] <= space.backward_lr.high
        assert space.recurrence.low <= p["recurrence"] <= space.recurrence.high
        assert space.every.low <= p["every"] <= space.every.high
        assert p["schedule"] in space.schedule
        assert ("scale" in p) == p["forward"] and (not p["forward"] or 0.5 <= p["scale"] <= 0.7)
        share, proxy = t.values
        assert 0 <= share <= 1 and -1 < proxy <= space.proxy_cap and t.user_attrs["n_pilot"] == 2
    assert study.trials[0].user_attrs["baseline"] and result.baseline is not None and result.baseline.number == 0
    # The chosen trial is on the front with the highest share; the saved spec carries its values, validated.
    chosen = result.chosen
    assert chosen is not None and chosen.trial in {t.number for t in study.best_trials}
    assert chosen.values[0] == max(t.values[0] for t in study.best_trials)
    again = load_spec(saved)
    assert again == parse_spec(again.model_dump(mode="json"))
    assert again.guidance_options == tuned_options(parse_spec({**LICOO}).guidance_options, study.trials[chosen.trial].params)
    assert again.guidance_options.backward_steps == study.trials[chosen.trial].params["backward_steps"]
    assert again.guidance == parse_spec({**LICOO}).guidance and result.saved_spec_hash == again.spec_hash()
    assert result.plot is not None and result.plot.stat().st_size > 0
    assert result.dashboard.startswith("optuna-dashboard sqlite:///")
    run = store.get_run(result.run_id)
    assert run.kind == "tune" and run.status == "finished" and run.summary["chosen"]["trial"] == chosen.trial
    events = [e for e in store.audit_log(result.run_id).events() if e.kind == "tool_call"]
    assert [e.payload["tool"] for e in events] == ["tune_trial"] * 4 + ["tune"]
    assert store.verify_run(result.run_id).ok


def test_yield_trial_relaxes_within_its_budget_and_scores_sun_c_per_cpu_second(tmp_path: Path) -> None:
    space = TuneSpace.model_validate({**NARROW, "pruning": {"min_share": 0.0, "percentile": None}})
    result = tune(TuneParams(spec=parse_spec({**BORON}), trials=2, objective="yield", pilot=2, steps=10, relax=1,
                             relax_steps=20, out=tmp_path, space=space, seed=0))
    assert result.n_complete == 2
    for t in result.trials:
        assert t.n_relaxed is not None and t.n_relaxed <= 1 and t.n_sun_c <= t.n_relaxed
        assert t.cpu_seconds > 0 and math.isclose(t.values[0], t.n_sun_c / t.cpu_seconds)
        assert math.isclose(t.cpu_seconds, t.cpu_sample_seconds + t.cpu_evaluate_seconds)
        assert 0.8 <= t.params["ehull_ceiling"] <= 1.2
    assert sum(t.n_relaxed for t in result.trials) >= 1  # seed 1: the baseline trial's crystal passes and relaxes
    assert result.chosen is not None and result.chosen.ehull_ceiling == result.chosen.params["ehull_ceiling"]
    # A share under the floor stops the trial after sampling: no prescreen, no relaxation, nothing chosen.
    strict = space.model_copy(update={"pruning": space.pruning.model_copy(update={"min_share": 0.75})})
    pruned = tune(TuneParams(spec=parse_spec({**BORON}), trials=1, objective="yield", pilot=2, steps=10, relax=1,
                             relax_steps=20, out=tmp_path, space=strict, study="strict"))
    (t,) = pruned.trials
    assert t.state == "pruned" and t.share == 0.5 and t.values is None and t.n_relaxed is None
    assert pruned.n_pruned == 1 and pruned.chosen is None and pruned.warnings
