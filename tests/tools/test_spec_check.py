"""``evaluate --spec``: structures from anywhere judged against a DesignSpec's constraints.

Physics: CoSn (B35, P6/mmm) is a kagome net of Co (Co-Co = a/2) with Sn in and between the planes; rocksalt
NaCl has no kagome net of anything. The volume per atom of a cell is V/N, whatever made it.
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

from tessera.tools.evaluate import EvaluateFilesParams, EvaluateParams, evaluate_files
from tessera.tools.spec import parse_spec
from tessera.tools.spec_check import attach_spec, spec_record
from tessera.tools.candidate import Candidate

A, C = 5.279, 4.259


def cosn() -> Structure:
    lattice = Lattice.hexagonal(A, C)
    return Structure(lattice, ["Co", "Co", "Co", "Sn", "Sn", "Sn"],
                     [[0.5, 0, 0], [0, 0.5, 0], [0.5, 0.5, 0], [0, 0, 0], [1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]])


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def spec(vpa: float) -> object:
    return parse_spec({"chemistry": {"elements": ["Co", "Sn"], "required": ["Co", "Sn"], "n_elements": 2},
                       "motif": {"lattice": "kagome", "element": "Co", "bond_length": A / 2},
                       "guidance": [{"kind": "volume_per_atom", "target": vpa, "tolerance": 0.5}]})


def test_kagome_cosn_meets_the_spec_and_rocksalt_does_not() -> None:
    s = cosn()
    vpa = s.volume / len(s)
    design = spec(vpa)
    cands = [Candidate.from_structure(cosn()), Candidate.from_structure(rocksalt())]
    assert attach_spec(cands, design) == 2
    good, bad = (c.provenance["constraints"] for c in cands)
    assert good["motif_exact"] and good["required_met"] and good["guidance_met"]
    assert abs(good["guidance"][0]["value"] - vpa) < 1e-3
    assert not bad["motif_exact"] and not bad["required_met"]
    assert cands[0].provenance["constraints_satisfied"] and not cands[1].provenance["constraints_satisfied"]
    assert cands[0].provenance["spec_hash"] == design.spec_hash()


def test_a_spec_without_constraints_adds_no_record() -> None:
    assert spec_record(cosn(), parse_spec({"chemistry": {"elements": ["Co", "Sn"]}})) == {}


def test_evaluate_files_with_a_spec_checks_the_motif_after_relaxation(tmp_path: Path) -> None:
    path = tmp_path / "CoSn.cif"
    cosn().to(filename=str(path))
    s = cosn()
    result = evaluate_files(EvaluateFilesParams(paths=[path], out=tmp_path / "out", spec=spec(s.volume / len(s)),
                                                evaluate=EvaluateParams(workers=0, novelty=False, confirm=None)))
    (cand,) = result.candidates
    assert cand.relaxed and cand.provenance["constraints"]["motif_retained"] is True
    assert result.constraints is not None and result.constraints.n_motif_retained == 1


def test_evaluate_cli_refuses_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "CoSn.cif"
    cosn().to(filename=str(path))
    (tmp_path / "bad.json").write_text('{"motif": {"lattice": "kagomee", "element": "Co"}}')
    tessera = str(Path(sys.executable).with_name("tessera"))
    proc = subprocess.run([tessera, "evaluate", str(path), "--spec", str(tmp_path / "bad.json"), "--no-store",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "kagomee" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()  # refused before any work
