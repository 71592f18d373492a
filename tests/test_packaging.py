"""The installed package is ``tessera``: folders named ``tools`` or ``store`` elsewhere cannot shadow ours.

Before issue 14 the rooms installed as top-level packages (``tools``, ``store``, ...), and a folder named
``store`` in the working directory shadowed ours once in a test; LangGraph apps conventionally have their
own ``tools``. Here a fresh interpreter runs from a folder holding such decoys, with that folder first on
``sys.path``, and must still load our modules from the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_PROBE = (
    "import tessera.tools.evaluate, tessera.store\n"
    "print(tessera.tools.evaluate.__file__)\n"
    "print(tessera.store.__file__)\n"
)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": "."}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_decoy_tools_and_store_folders_do_not_shadow_tessera(tmp_path: Path) -> None:
    for name in ("tools", "store"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text('raise ImportError("shadowed")\n')

    # The decoys are live: a bare `import tools` / `import store` from here gets them.
    for name in ("tools", "store"):
        bare = _run(f"import {name}", tmp_path)
        assert bare.returncode != 0 and "shadowed" in bare.stderr, f"decoy {name}/ was not picked up: {bare.stderr}"

    probe = _run(_PROBE, tmp_path)
    assert probe.returncode == 0, f"importing tessera from a folder with decoys failed:\n{probe.stderr[-3000:]}"
    evaluate_file, store_file = (Path(line).resolve() for line in probe.stdout.strip().splitlines()[-2:])
    assert evaluate_file == REPO / "tools" / "evaluate.py"
    assert store_file == REPO / "store" / "__init__.py"
    assert not evaluate_file.is_relative_to(tmp_path.resolve()) and not store_file.is_relative_to(tmp_path.resolve())
