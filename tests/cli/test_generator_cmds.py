"""`tessera sample` with the shipped checkpoint, through the real Typer app (offline, seeded)."""

from __future__ import annotations

import json
from pathlib import Path

from pymatgen.core import Element, Structure
from typer.testing import CliRunner

from tessera.cli import app
from tessera.tools.sample import SHIPPED_CHECKPOINT

runner = CliRunner()


def _sample(out: Path, *extra: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["sample", "--out", str(out), "--steps", "50", "--json", *extra], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_shipped_checkpoint_is_small_and_documented() -> None:
    assert SHIPPED_CHECKPOINT.exists()
    assert SHIPPED_CHECKPOINT.stat().st_size <= 25e6
    meta = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    assert len(meta["pool_hash"]) == 64 and meta["step"] > 0 and "val_loss" in meta["metrics"]
    assert meta["model_config"] and meta["vocab"]


def test_sample_writes_cifs_and_is_seeded(tmp_path: Path) -> None:
    code, out, _ = _sample(tmp_path / "a", "--n", "4", "--seed", "3")
    assert code == 0
    summary = json.loads(out)
    assert summary["n"] == 4
    rows = [json.loads(line) for line in (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert {"id", "formula", "cif", "seed", "checkpoint"} <= set(row)
        s = Structure.from_file(tmp_path / "a" / f"{row['id']}.cif")
        assert len(s) == row["n_atoms"] and s.volume > 0
    code, _, _ = _sample(tmp_path / "b", "--n", "4", "--seed", "3")
    assert code == 0
    def crystals(folder: Path) -> list[dict]:  # everything but the run that recorded them
        return [{k: v for k, v in json.loads(line).items() if k != "sample_run"}
                for line in (folder / "candidates.jsonl").read_text().splitlines()]

    assert crystals(tmp_path / "a") == crystals(tmp_path / "b")


def test_sample_run_is_recorded_in_the_store(tmp_path: Path) -> None:
    from tessera.store import Store

    code, out, _ = _sample(tmp_path / "out", "--n", "3", "--seed", "5", "--store", str(tmp_path / "store"))
    assert code == 0
    summary = json.loads(out)
    store = Store.open(str(tmp_path / "store"), create=False)
    run = store.get_run(summary["run_id"])
    assert run.kind == "sample" and run.status == "finished" and run.seed == 5
    assert run.checkpoint_hash is not None and len(run.checkpoint_hash) == 64
    assert store.count(run_id=summary["run_id"]) == 3
    assert store.verify_run(summary["run_id"]).ok


def test_elements_and_atoms_restrict_the_output(tmp_path: Path) -> None:
    code, _, _ = _sample(tmp_path, "--n", "3", "--atoms", "6", "--elements", "Li,Co,O", "--seed", "1")
    assert code == 0
    for line in (tmp_path / "candidates.jsonl").read_text().splitlines():
        s = Structure.from_str(json.loads(line)["cif"], fmt="cif")
        assert len(s) == 6
        assert {el.symbol for el in s.composition.elements} <= {"Li", "Co", "O"}


def test_n_elements_asks_for_ternaries(tmp_path: Path) -> None:
    """`--n-elements 3` gives crystals of exactly three elements with the shipped (masked-type) checkpoint,
    inside --elements."""
    code, _, _ = _sample(tmp_path, "--n", "6", "--atoms", "8", "--n-elements", "3", "--elements", "Li,Fe,P,O,S", "--seed", "2")
    assert code == 0
    for line in (tmp_path / "candidates.jsonl").read_text().splitlines():
        s = Structure.from_str(json.loads(line)["cif"], fmt="cif")
        elements = {el.symbol for el in s.composition.elements}
        assert len(elements) == 3 and elements <= {"Li", "Fe", "P", "O", "S"}


def test_set_overrides_a_sampler_setting_and_rejects_bad_ones(tmp_path: Path) -> None:
    """`--set type_resample=1` reaches the sampler (recorded with every crystal, and it changes the draw
    from the same seed); an unknown key or an out-of-range value is one clear error, before any sampling."""
    base = ("--n", "4", "--atoms", "6", "--seed", "4", "--no-store")
    assert _sample(tmp_path / "plain", *base)[0] == 0
    code, _, _ = _sample(tmp_path / "resampled", *base, "--set", "type_resample=1", "--set", "type_resample_t_max=1000")
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "resampled" / "candidates.jsonl").read_text().splitlines()]
    assert all(r["sampler"]["type_resample"] == 1 and r["sampler"]["type_resample_t_max"] == 1000 for r in rows)
    plain = [json.loads(line)["cif"] for line in (tmp_path / "plain" / "candidates.jsonl").read_text().splitlines()]
    assert [r["cif"] for r in rows] != plain
    for bad, word in (("no_such_setting=1", "no_such_setting"), ("type_resample=2", "type_resample"), ("oops", "KEY=VALUE")):
        res = runner.invoke(app, ["sample", "--out", str(tmp_path / "bad"), "--no-store", "--set", bad])
        assert res.exit_code != 0 and word in res.stderr, (bad, res.stderr)
        assert not (tmp_path / "bad" / "candidates.jsonl").exists()


def test_bad_element_is_one_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sample", "--out", str(tmp_path), "--elements", "Li,Xx"])
    assert res.exit_code != 0
    assert "Xx" in str(res.exception) or "Xx" in res.stderr
    assert Element("Li").Z  # the valid one is not the problem


def test_warm_start_lineage_keeps_every_earlier_stage(tmp_path: Path) -> None:
    """A fine-tune of a fine-tune records both earlier stages, oldest first, each with its weights' sha256."""
    import hashlib

    from tessera.tools.train import training_lineage

    weights = tmp_path / "stage2.pt"
    weights.write_bytes(b"not really weights, only hashed")
    earlier = {"step": 18000, "train_config": {"lr": 1e-3}, "weights_sha256": "a" * 64}
    weights.with_suffix(".json").write_text(json.dumps({"step": 8000, "init_from": "stage1.pt", "lineage": [earlier],
                                                        "metrics": {"val_loss": 2.9}, "model_config": {"hidden": 8}}))
    lineage = training_lineage(weights)
    assert [st["step"] for st in lineage] == [18000, 8000]
    assert lineage[0] == earlier
    assert lineage[1]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert lineage[1]["init_from"] == "stage1.pt" and lineage[1]["model_config"] == {"hidden": 8}
    shipped = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    if shipped.get("lineage"):
        assert shipped["training_steps_total"] == sum(st["step"] for st in shipped["lineage"]) + shipped["step"]


def test_ship_generator_copies_weights_with_their_lineage(tmp_path: Path) -> None:
    """`tessera train ship-generator` ships a warm-started tiny model: weights copied, lineage and step total kept."""
    import yaml

    from tessera.generators.model import save_weights
    from tests.generators.conftest import random_crystals, tiny_model

    model = tiny_model(random_crystals(20, seed=4), type_process="masked", num_steps=1000)  # sampler.yaml: 1000 steps
    src = tmp_path / "work" / "best_ema.pt"
    src.parent.mkdir()
    save_weights(model, src, extra={"step": 30, "metrics": {"val_loss": 1.0},
                                    "lineage": [{"step": 100, "weights_sha256": "b" * 64}]})
    config = tmp_path / "gen.yaml"
    config.write_text(yaml.safe_dump({"model": {}, "train": {}, "shipped": str(tmp_path / "ship" / "g.pt")}))
    res = runner.invoke(app, ["train", "ship-generator", "--config", str(config), "--from", str(src), "--n-check", "2", "--json"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    shipped = tmp_path / "ship" / "g.pt"
    assert shipped.read_bytes() == src.read_bytes()
    meta = json.loads(shipped.with_suffix(".json").read_text())
    assert meta["training_steps_total"] == 130 and meta["sample_check"]["n"] == 2
