"""The package as a user installs it: a wheel (not editable) in a fresh virtual environment.

The heavy dependencies (PyTorch, ...) are not installed again: after the wheel is installed with
``--no-deps``, a ``.pth`` file points the new environment at this interpreter's site-packages,
which are searched after the environment's own (so ``e2evision`` comes from the wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 120) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.mark.slow
def test_wheel_ships_the_configs_and_trains_by_name_from_elsewhere(tmp_path, egamma_pair):
    src = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    # symlinks=True keeps src/e2evision/configs a link, as in the checkout
    shutil.copytree(ROOT / "src", src / "src", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(src),
            "-w",
            str(tmp_path / "dist"),
        ],
        tmp_path,
        env,
    )
    wheel = next((tmp_path / "dist").glob("e2evision-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp_path,
        env,
    )
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = Path(_run([str(py), "-c", purelib], tmp_path, env).strip())
    (own / "zz_shared_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(py), "-c", "import e2evision; print(e2evision.__file__)"], elsewhere, env)
    # the wheel, not the checkout or an editable install
    assert Path(where.strip()).is_relative_to(venv), where
    listing = _run([str(venv / "bin" / "e2evision"), "configs", "--json"], elsewhere, env)
    rows = {r["name"]: r for r in json.loads(listing)}
    assert set(rows) == {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    shipped = Path(rows["egamma_resnet15"]["path"])
    assert shipped.is_relative_to(venv)
    assert shipped.read_text() == (ROOT / "configs" / "egamma_resnet15.yaml").read_text()

    p, e, _, _ = egamma_pair
    sets = [
        "train.folds=2",
        "train.max_epochs=1",
        "train.progress=false",
        "train.batch_size=32",
        "model.kwargs.widths=[4, 8]",
        "model.kwargs.blocks_per_stage=1",
    ]
    out = _run(
        [
            str(venv / "bin" / "e2evision"),
            "train",
            "egamma_resnet15",
            "--data",
            str(p),
            "--data",
            str(e),
            "--out",
            "run",
            *sum((["--set", s] for s in sets), []),
        ],
        elsewhere,
        env,
        timeout=300,
    )
    assert "test AUC" in out
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["model"] == "resnet15" and len(metrics["fold_auc"]) == 2
    assert np.isfinite(metrics["test_auc"])
