"""Optuna search: the space, two workers sharing one study (SQLite and PostgreSQL), reproducible best."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from e2evision.config import load_config
from e2evision.tuning import ParamSpec

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "train.max_epochs=1",
    "train.folds=2",
    "train.progress=false",
    "train.batch_size=32",
    "model.kwargs.widths=[8, 16]",
    "train.early_stopping_patience=null",
]
SPACE = (
    "tune.params={train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}, "
    "augment.flip_phi: {type: categorical, choices: [true, false]}}"
)


def test_search_space_validation_and_suggestions():
    import optuna

    from e2evision.tuning.search import suggest

    with pytest.raises(ValueError, match="low < high"):
        ParamSpec(type="float", low=1.0, high=0.5)
    with pytest.raises(ValueError, match="log-scale parameter needs low > 0"):
        ParamSpec(type="float", low=0.0, high=1.0, log=True)
    with pytest.raises(ValueError, match="non-empty 'choices'"):
        ParamSpec(type="categorical")
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", [SPACE])
    trial = optuna.trial.FixedTrial({"train.lr": 3e-3, "augment.flip_phi": False})
    assert suggest(trial, cfg.tune.params) == {"train.lr": 3e-3, "augment.flip_phi": False}
    with pytest.raises(ValueError, match="invalid config"):
        load_config(ROOT / "configs/egamma_resnet15.yaml", ["tune.params={train.lr: {type: gaussian}}"])


def _workers(cfg_args: list[str], storage: str | None, study_dir: Path, trials: int = 2) -> None:
    cmd = [
        sys.executable,
        "-m",
        "e2evision",
        "tune",
        str(ROOT / "configs/egamma_resnet15.yaml"),
        "--trials",
        str(trials),
        "--study",
        "tiny",
        "--out",
        str(study_dir),
        *cfg_args,
    ]
    if storage:
        cmd += ["--storage", storage]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([*cmd, "--worker", str(w)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for w in (0, 1)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


def _check_shared_study(study_dir: Path, storage: str) -> dict:
    import optuna

    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    run_dirs = {t.user_attrs["run_dir"] for t in trials}
    assert len(run_dirs) == 4 and all((Path(d) / "metrics.json").is_file() for d in run_dirs)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 4  # no trial ran the same parameters twice
    for t in trials:  # each value is the run's own fold AUC mean
        m = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert t.value == pytest.approx(m["fold_auc_mean"])
    return {"best": study.best_trial}


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study_and_the_best_trial_reproduces(tmp_path, egamma_pair):
    from e2evision.training import run_experiment

    p, e, _, _ = egamma_pair
    study_dir = tmp_path / "study"
    args = ["--data", str(p), "--data", str(e), *sum((["--set", s] for s in [*FAST, SPACE]), [])]
    _workers(args, None, study_dir)
    storage = f"sqlite:///{study_dir / 'study.db'}"
    best = _check_shared_study(study_dir, storage)["best"]
    summary = json.loads((study_dir / "trials.json").read_text())
    assert summary["n_complete"] == 4 and (study_dir / "history.png").is_file()
    best_cfg = load_config(study_dir / "best_config.yaml")
    assert best_cfg.train.lr == pytest.approx(best.params["train.lr"]) and best_cfg.tune is None
    again = run_experiment(best_cfg, tmp_path / "again")
    assert again["fold_auc_mean"] == pytest.approx(best.value, abs=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on loopback (Debian's postgresql); skipped, with the reason, without it."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    initdb = shutil.which("initdb") or (bins and f"{bins[-1]}/initdb")
    pg_ctl = shutil.which("pg_ctl") or (bins and f"{bins[-1]}/pg_ctl")
    if not initdb or not os.path.exists(initdb):
        pytest.skip("PostgreSQL server binaries not found (Debian package 'postgresql'; .ci/run installs it)")
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver, in the test extra) is not installed")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="e2e-pg-", dir="/tmp"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the 'postgres' user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, egamma_pair, postgres_url):
    p, e, _, _ = egamma_pair
    study_dir = tmp_path / "pg"
    args = ["--data", str(p), "--data", str(e), *sum((["--set", s] for s in [*FAST, SPACE]), [])]
    _workers(args, postgres_url, study_dir)
    _check_shared_study(study_dir, postgres_url)
    summary = json.loads((study_dir / "trials.json").read_text())
    assert summary["storage"].startswith("postgresql+psycopg://postgres") and summary["n_complete"] == 4


def test_tune_without_a_space_is_a_clear_error(tmp_path, egamma_pair):
    from typer.testing import CliRunner

    from e2evision.cli import app

    p, e, _, _ = egamma_pair
    res = CliRunner().invoke(
        app,
        [
            "tune",
            str(ROOT / "configs/egamma_resnet15.yaml"),
            "--trials",
            "1",
            "--study",
            "x",
            "--out",
            str(tmp_path / "s"),
            "--data",
            str(p),
        ],
    )
    assert res.exit_code == 2 and "no 'tune.params' search space" in res.output


def test_objective_follows_the_task_and_contradictions_are_errors():
    from e2evision.tuning.search import objective_for
    from e2evision.tuning.space import TuneConfig

    assert objective_for(TuneConfig(), "regression") == ("fold_mae_mean", "minimize", "val_mae")
    assert objective_for(TuneConfig(), "multiclass") == ("fold_auc_mean", "maximize", "val_auc")
    assert objective_for(TuneConfig(metric="oof_auc"), "binary") == ("oof_auc", "maximize", "val_auc")
    with pytest.raises(
        ValueError,
        match="tune.metric: fold_auc_mean is not measured for a regression task; use one of fold_mae_mean, oof_mae",
    ):
        objective_for(TuneConfig(metric="fold_auc_mean"), "regression")
    with pytest.raises(ValueError, match="tune.direction: maximize for fold_mae_mean, which is better when lower"):
        objective_for(TuneConfig(direction="maximize"), "regression")


@pytest.mark.slow
def test_a_regression_study_minimises_the_fold_mae_and_its_best_trial_reproduces(tmp_path):
    """Two trials on top-mass regression: value = the trial's fold MAE mean, best = the lowest."""
    import optuna
    from test_training import write_top_mass

    from e2evision.training import run_experiment
    from e2evision.tuning import run_study

    data = write_top_mass(tmp_path / "top_gun_opendata_0.parquet", n=80)
    cfg = load_config(
        ROOT / "configs/top_mass_resnet15.yaml",
        [
            f"data.paths={json.dumps([str(data)])}",
            "data.kwargs={image_size: [16, 16]}",
            *FAST,
            "model.kwargs.blocks_per_stage=1",
            "tune.params={train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}",
        ],
    )
    summary = run_study(cfg, "reg", 2, out_dir=tmp_path / "study")
    assert summary["n_complete"] == 2 and summary["metric"] == "fold_mae_mean"
    assert summary["direction"] == "minimize"
    study = optuna.load_study(study_name="reg", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    values = {}
    for t in study.get_trials():
        m = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert t.value == pytest.approx(m["fold_mae_mean"]) and m["task"] == "regression"
        values[t.number] = t.value
    assert study.best_trial.number == min(values, key=values.get)
    # the report lists the trials best first: lowest MAE first for this study
    import re

    from e2evision.report import build_report

    page = build_report([tmp_path / "study"], tmp_path / "r.html", saliency=False).read_text()
    listed = [int(n) for n in re.findall(r"<tr><td>(\d+)</td><td>COMPLETE</td>", page)]
    assert listed == sorted(values, key=values.get)
    best_cfg = load_config(tmp_path / "study" / "best_config.yaml")
    again = run_experiment(best_cfg, tmp_path / "again")
    assert again["fold_mae_mean"] == pytest.approx(study.best_value, abs=1e-9)
