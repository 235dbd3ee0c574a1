"""K-fold training into a run directory: contents, provenance, reuse of finished folds, the three
tasks' metrics (recomputed here with scikit-learn and NumPy from predictions.npz), staged training
and loggers."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from schema_files import sparse_jets, write_jet_parquet
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

from e2evision.config import load_config
from e2evision.datasets import EgammaHDF5, open_dataset
from e2evision.datasets.split import split_indices
from e2evision.models import create_model
from e2evision.rundir import load_fold_module
from e2evision.training import run_experiment
from e2evision.training.loggers import MissingLoggerError, build_loggers, check_loggers
from e2evision.training.module import BinaryClassifier, ImageModule
from e2evision.transforms.normalize import ChannelNormalizer

ROOT = Path(__file__).resolve().parents[1]
# the e/γ configs' pre-log preprocessing: these tests' blob data would separate perfectly with log1p,
# and some checks (DeLong's standard error, calibration) need overlapping classes
LINEAR = [
    "preprocess.log1p=null",
    "preprocess.channel_scale=null",
    "preprocess.normalize=scale",
    "preprocess.clip=50.0",
    "augment.flip_about=centre",
]
FAST = [
    "train.max_epochs=2",
    "train.folds=2",
    "train.progress=false",
    "train.batch_size=32",
    "model.kwargs.widths=[8, 16]",
    *LINEAR,
]
TINY = [
    "train.max_epochs=2",
    "train.folds=2",
    "train.progress=false",
    "train.batch_size=16",
    "model.name=resnet15",
    "model.kwargs={widths: [4, 8]}",
    "augment.flip_eta=false",
    "augment.flip_phi=false",
]


def _cfg(paths, *extra):
    return load_config(
        ROOT / "configs/egamma_resnet15.yaml", [f"data.paths={json.dumps([str(p) for p in paths])}", *FAST, *extra]
    )


def _task_cfg(config: str, path: Path, *extra: str):
    return load_config(ROOT / "configs" / config, [f"data.paths={json.dumps([str(path)])}", *TINY, *extra])


# ------------------------------------------------------------------------------ small datasets
def write_qg(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Quark/gluon Parquet (3 × 16 × 16) with a pT column; 'gluons' have brighter tracks."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float64)
    x = sparse_jets(n, 3, rng, size=16, hits=20)
    x[y == 1, 0] *= 2.0
    cols = {"X_jets": x, "pt": rng.uniform(70, 100, n), "m0": rng.uniform(5, 40, n), "y": y}
    return write_jet_parquet(path, cols)


def write_top_mass(path: Path, n: int = 120, seed: int = 1) -> Path:
    """Top-mass Parquet (8 × 16 × 16); the mass grows with the hottest deposit."""
    rng = np.random.default_rng(seed)
    x = sparse_jets(n, 8, rng, size=16, hits=20)
    hottest = x.max(axis=(1, 2, 3))
    m = 120 + 60 * hottest / hottest.mean() + rng.normal(0, 3, n)
    cols = {
        "X_jet": x,
        "m": m,
        "iphi": rng.uniform(0, 360, n),
        "pt": rng.uniform(400, 600, n),
        "ieta": rng.uniform(-140, 140, n),
    }
    return write_jet_parquet(path, cols)


def write_lensing(root: Path, per_class: int = 30, size: int = 16, seed: int = 2) -> Path:
    """DeepLense layout ``root/{axion,cdm,no_sub}/*.npy``: rings of class-dependent radius, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    for c, cls in enumerate(("axion", "cdm", "no_sub")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = np.exp(-0.5 * ((r - 2 - 2 * c) / 1.2) ** 2) + rng.normal(0, 0.2, r.shape)
            np.save(root / cls / f"{cls}_{i}.npy", img)
    return root


def _preds(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "predictions.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# ----------------------------------------------------------------------------------------- tests
def test_split_is_stratified_disjoint_and_seeded():
    labels = np.r_[np.zeros(70), np.ones(30)].astype(np.float32)
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", ["data.test_fraction=0.2"])
    tv, te = split_indices(labels, cfg)
    assert np.intersect1d(tv, te).size == 0 and tv.size + te.size == 100
    assert labels[te].mean() == pytest.approx(0.3)
    tv2, te2 = split_indices(labels, cfg)
    np.testing.assert_array_equal(te, te2)
    sub = split_indices(labels, load_config(ROOT / "configs/egamma_resnet15.yaml", ["data.max_samples=50"]))
    assert sub[0].size + sub[1].size == 50
    # regression targets are stratified by quantile bins: the test split spans the whole range
    target = np.linspace(100.0, 300.0, 200)
    tv, te = split_indices(target, cfg, task="regression")
    assert te.size == 40 and np.histogram(target[te], bins=4, range=(100, 300))[0].min() >= 8


def test_run_directory_is_complete_and_reproducible(egamma_pair, tmp_path):
    p, e, x, y = egamma_pair
    out = tmp_path / "run"
    m = run_experiment(_cfg([p, e]), out)

    for name in ("config.yaml", "run.json", "metrics.json", "predictions.npz", "saliency.npz"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(m))
    assert len(metrics["fold_auc"]) == 2 and 0.0 <= metrics["test_auc"] <= 1.0
    # per fold and epoch, the share of training-step time spent waiting for batches (fold.json too)
    waits = metrics["loader_wait_fraction"]
    assert [len(w) for w in waits] == [2, 2] and all(0.0 <= v <= 1.0 for w in waits for v in w)
    fold0 = json.loads((out / "fold_0" / "fold.json").read_text())
    assert [r["loader_wait_fraction"] for r in fold0["loader_wait"]] == waits[0]
    lo, hi = metrics["test_auc_ci"]
    assert lo <= metrics["test_auc"] <= hi
    lo, hi = metrics["test_auc_delong_ci"]
    assert lo <= metrics["test_auc"] <= hi and metrics["test_auc_std_error"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 7 and run["versions"]["torch"] == torch.__version__
    assert run["data"]["fingerprint"].startswith("sha256:") and run["finished_at"]
    assert run["data"]["task"] == "binary" and run["processes"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "resnet15"

    pred = _preds(out)
    assert pred["oof_score"].shape == (metrics["n_trainval"],) and np.isfinite(pred["oof_score"]).all()
    assert set(np.unique(pred["oof_fold"])) == {0, 1}
    assert pred["test_fold_scores"].shape == (2, metrics["n_test"])
    np.testing.assert_allclose(pred["test_score"], pred["test_fold_scores"].mean(0))
    np.testing.assert_array_equal(pred["test_label"], y[pred["test_index"]])  # indices point at the data
    assert np.intersect1d(pred["test_index"], pred["oof_index"]).size == 0

    # The saved safetensors weights alone reproduce fold 0's test scores from raw images, loaded
    # into the module under its first name (what the export code does).
    model = create_model("resnet15", in_chans=2, img_size=32, widths=[8, 16])
    module = BinaryClassifier(model, ChannelNormalizer(2, "scale", clip=50.0), _cfg([p, e]).train)
    state = load_file(out / "fold_0" / "model.safetensors")
    assert {k.split(".")[0] for k in state} == {"model", "normalizer"}
    module.load_state_dict(state)
    module.eval()
    with torch.no_grad():
        xs, _ = EgammaHDF5([p, e]).read(pred["test_index"])
        scores = torch.sigmoid(module(torch.from_numpy(xs))).numpy()
    np.testing.assert_allclose(scores, pred["test_fold_scores"][0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        again = load_fold_module(out, 0).scores(torch.from_numpy(xs)).numpy()
    np.testing.assert_allclose(again, scores, rtol=1e-6, atol=1e-7)
    # The per-epoch history pairs each epoch's train loss with that epoch's validation (as
    # Lightning's own CSV log has them), so learning curves are not shifted by one epoch.
    logged: dict[int, dict[str, float]] = {}
    with open(out / "fold_0" / "logs" / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            logged.setdefault(int(row["epoch"]), {}).update(
                {k: float(v) for k, v in row.items() if v and k in ("train_loss", "val_auc")}
            )
    hist0 = [h for h in metrics["history"] if h["fold"] == 0]
    assert [h["epoch"] for h in hist0] == sorted(logged)
    for h in hist0:
        assert h["train_loss"] == pytest.approx(logged[h["epoch"]]["train_loss"], rel=1e-6)
        assert h["val_auc"] == pytest.approx(logged[h["epoch"]]["val_auc"])
    norm = json.loads((out / "fold_0" / "normalizer.json").read_text())
    assert norm["mode"] == "scale" and len(norm["scale"]) == 2
    # Saliency: gradient × input of fold 0's model on two test images per class
    with np.load(out / "saliency.npz", allow_pickle=False) as sal:
        assert sal["saliency"].shape == sal["images"].shape == (4, 2, 32, 32)
        assert sorted(sal["labels"].tolist()) == [0, 0, 1, 1] and np.abs(sal["saliency"]).sum() > 0
        np.testing.assert_allclose(sal["images"], x[sal["index"]].transpose(0, 3, 1, 2))

    # Same seed, fresh directory: identical results (deterministic on CPU).
    m2 = run_experiment(_cfg([p, e]), tmp_path / "run2")
    assert m2["fold_auc"] == m["fold_auc"] and m2["test_auc"] == m["test_auc"]


def test_finished_folds_are_reused_and_guarded(egamma_pair, tmp_path):
    p, e, *_ = egamma_pair
    out = tmp_path / "run"
    first = run_experiment(_cfg([p, e]), out)
    stamp = (out / "fold_1" / "model.safetensors").stat().st_mtime_ns
    (out / "metrics.json").unlink()  # as if interrupted after both folds finished
    again = run_experiment(_cfg([p, e]), out)
    assert (out / "fold_1" / "model.safetensors").stat().st_mtime_ns == stamp  # not retrained
    assert again["fold_auc"] == first["fold_auc"] and again["test_auc"] == first["test_auc"]
    with pytest.raises(RuntimeError, match="different config or data split"):
        run_experiment(_cfg([p, e], "train.lr=0.01"), out)


RELEASE_SCRIPT = """
import gc, json, sys, weakref
from e2evision.config import load_config
from e2evision.training import data
from e2evision.training.runner import run_experiment

gc.disable()  # only run_experiment itself may free the images
loaded = []
real = data.load_in_memory

def tracked(*args, **kwargs):
    x, y = real(*args, **kwargs)
    loaded.append(weakref.ref(x))
    return x, y

data.load_in_memory = tracked
run_experiment(load_config(sys.argv[1], json.loads(sys.argv[2])), sys.argv[3])
print(json.dumps([ref() is not None for ref in loaded]))
"""


def test_a_finished_run_releases_its_in_memory_data(egamma_pair, tmp_path):
    """The in-memory images die with the run, without waiting for Python's cyclic collector.

    Lightning's trainer, module and data module refer to one another; before run_experiment
    collected them, a process that ran experiments one after another (a learning curve) grew by
    the data's size per run. In a subprocess, so that nothing of pytest's keeps a reference.
    """
    p, e, *_ = egamma_pair
    sets = [f"data.paths={json.dumps([str(p), str(e)])}", *FAST]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RELEASE_SCRIPT,
            str(ROOT / "configs/egamma_resnet15.yaml"),
            json.dumps(sets),
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False]


def test_no_data_is_a_clear_error(tmp_path):
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml")
    with pytest.raises(ValueError, match="no data: set data.paths"):
        run_experiment(cfg, tmp_path / "x")


def test_binary_metrics_equal_a_recomputation_from_the_predictions(tmp_path):
    """ROC-AUC, rejection at ε_S = 0.3/0.5 and AUC in pT bins, recomputed with scikit-learn."""
    data = write_qg(tmp_path / "qg.parquet")
    out = tmp_path / "run"
    m = run_experiment(_task_cfg("quark_gluon_resnet15.yaml", data, "data.kwargs={image_size: [16, 16]}"), out)
    pred = _preds(out)
    y, s = pred["test_label"], pred["test_score"]
    assert m["task"] == "binary" and m["class_names"] == ["quark", "gluon"]
    for k, auc in enumerate(m["fold_auc"]):
        sel = pred["oof_fold"] == k
        assert auc == pytest.approx(roc_auc_score(pred["oof_label"][sel], pred["oof_score"][sel]), abs=1e-12)
    assert m["oof_auc"] == pytest.approx(roc_auc_score(pred["oof_label"], pred["oof_score"]), abs=1e-12)
    assert m["test_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # Rejection: without tied scores, ε_B at ε_S is the background fraction scoring at or above
    # the ⌈ε_S·m⌉-th highest signal score, linearly interpolated on the ROC segment before it.
    assert np.unique(s).size == s.size
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    for row, eff in zip(m["background_rejection"], (0.3, 0.5)):
        above = int(np.argmax(tpr >= eff))
        eps = fpr[above - 1] + (eff - tpr[above - 1]) / (tpr[above] - tpr[above - 1]) * (fpr[above] - fpr[above - 1])
        assert row["signal_efficiency"] == eff
        assert row["background_efficiency"] == pytest.approx(eps, abs=1e-12)
        assert row["rejection"] == (pytest.approx(1 / eps) if eps > 0 else None)
        assert row["n_background"] == int((y == 0).sum())
    # AUC in 5 equal-count bins of the jet pT read back from the file
    pt = open_dataset(data, **{"image_size": [16, 16]}).read_scalars(pred["test_index"])[:, 0]
    np.testing.assert_array_equal(pred["scalar_names"], ["pt", "m0"])
    np.testing.assert_allclose(pred["test_scalars"][:, 0], pt)
    bins = m["auc_in_bins"]
    edges = np.quantile(pt.astype(np.float64), np.linspace(0, 1, 6))
    np.testing.assert_allclose(bins["edges"], edges)
    idx = np.clip(np.searchsorted(edges, pt, side="right") - 1, 0, 4)
    for b in range(5):
        sel = idx == b
        assert bins["n"][b] == sel.sum()
        want = roc_auc_score(y[sel], s[sel]) if 0 < y[sel].sum() < sel.sum() else None
        assert bins["auc"][b] == (pytest.approx(want, abs=1e-12) if want is not None else None)


def test_multiclass_run_on_lensing_images(tmp_path):
    """Cross-entropy over 3 classes; macro one-vs-rest AUCs, accuracy and the confusion matrix
    equal scikit-learn's on the saved probabilities; the weights reproduce them."""
    data = write_lensing(tmp_path / "lens")
    out = tmp_path / "run"
    m = run_experiment(_task_cfg("lensing_resnet15.yaml", data, "train.max_epochs=3"), out)
    pred = _preds(out)
    y, s = pred["test_label"].astype(int), pred["test_score"]
    assert m["task"] == "multiclass" and m["class_names"] == ["axion", "cdm", "no_sub"]
    assert s.shape == (m["n_test"], 3) and pred["test_fold_scores"].shape == (2, m["n_test"], 3)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-6)  # softmax probabilities
    for k, auc in enumerate(m["fold_auc"]):
        sel = pred["oof_fold"] == k
        want = roc_auc_score(pred["oof_label"][sel], pred["oof_score"][sel], multi_class="ovr", average="macro")
        assert auc == pytest.approx(want, abs=1e-12)
    assert m["test_auc"] == pytest.approx(roc_auc_score(y, s, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["test_auc_weighted"] == pytest.approx(roc_auc_score(y, s, multi_class="ovr", average="weighted"))
    for c, name in enumerate(m["class_names"]):
        assert m["test_ovr_auc"][name] == pytest.approx(roc_auc_score(y == c, s[:, c]), abs=1e-12)
    assert m["test_accuracy"] == pytest.approx(accuracy_score(y, s.argmax(1)))
    assert m["confusion_matrix"] == confusion_matrix(y, s.argmax(1), labels=[0, 1, 2]).tolist()
    assert m["test_auc"] > 0.8, "rings of different radii are easy to tell apart"
    assert all("val_auc" in h for h in m["history"])
    module = load_fold_module(out, 1)
    images, _ = open_dataset(data).read(pred["test_index"])
    with torch.no_grad():
        np.testing.assert_allclose(
            module.scores(torch.from_numpy(images)).numpy(), pred["test_fold_scores"][1], rtol=1e-5, atol=1e-6
        )


def test_regression_run_predicts_in_target_units(tmp_path):
    """MAE loss on (m − shift)/scale with shift/scale fitted on the training folds; predictions,
    MAE, bias and resolutions in GeV, equal to NumPy on the saved predictions."""
    data = write_top_mass(tmp_path / "top_gun_opendata_0.parquet")
    out = tmp_path / "run"
    cfg = _task_cfg(
        "top_mass_resnet15.yaml",
        data,
        "data.kwargs={image_size: [16, 16]}",
        "preprocess.target_shift=mean",
        "preprocess.target_scale=std",
        "train.lr=3e-3",
    )
    m = run_experiment(cfg, out)
    pred = _preds(out)
    t, p = pred["test_label"].astype(np.float64), pred["test_score"]
    r = p - t
    assert m["task"] == "regression" and m["monitor"] == "val_mae"
    assert m["test_mae"] == pytest.approx(np.mean(np.abs(r)), rel=1e-12)
    assert m["test"]["bias"] == pytest.approx(np.mean(r), rel=1e-9)
    assert m["test"]["resolution"] == pytest.approx(np.std(r, ddof=1), rel=1e-9)
    q16, q84 = np.percentile(r, [100 * 0.15865525393145707, 100 * 0.8413447460685429])
    assert m["test"]["resolution_robust"] == pytest.approx((q84 - q16) / 2, rel=1e-9)
    for k, mae in enumerate(m["fold_mae"]):
        sel = pred["oof_fold"] == k
        assert mae == pytest.approx(np.mean(np.abs(pred["oof_score"][sel] - pred["oof_label"][sel])), rel=1e-12)
    lo, hi = m["test_mae_ci"]
    assert lo < m["test_mae"] < hi
    assert sum(m["test_in_bins"]["n"]) == t.size
    # The module un-scales its output: fold 0 trained on the rows of fold 1, whose target mean
    # and std are the stored shift and scale, and its predictions are the saved ones, in GeV.
    module = load_fold_module(out, 0)
    train_targets = pred["oof_label"][pred["oof_fold"] == 1].astype(np.float64)
    assert float(module.target_shift) == pytest.approx(train_targets.mean(), rel=1e-6)
    assert float(module.target_scale) == pytest.approx(train_targets.std(), rel=1e-6)
    images, _ = open_dataset(data, image_size=[16, 16]).read(pred["test_index"])
    with torch.no_grad():
        np.testing.assert_allclose(
            module(torch.from_numpy(images)).numpy(), pred["test_fold_scores"][0], rtol=1e-5, atol=1e-3
        )
    # in GeV, not in scaled units (which would sit near 0 for targets around 180 GeV)
    assert abs(p.mean() - t.mean()) < t.std()


class _Snapshots(pl.Callback):
    """Weights and learning rates at the start and end of every epoch."""

    def __init__(self) -> None:
        self.start: list[dict[str, torch.Tensor]] = []
        self.end: list[dict[str, torch.Tensor]] = []
        self.lrs: list[dict[str, float]] = []
        self.trainable: list[set[str]] = []

    def _state(self, module: ImageModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.model.named_parameters()}

    def on_train_epoch_start(self, trainer: pl.Trainer, module: ImageModule) -> None:
        self.start.append(self._state(module))

    def on_train_batch_start(self, trainer: pl.Trainer, module: ImageModule, batch, batch_idx: int) -> None:
        if batch_idx == 0:  # after the module's own epoch-start hook has set the stage
            self.trainable.append({n for n, p in module.model.named_parameters() if p.requires_grad})
            names = {id(p): n for n, p in module.model.named_parameters()}
            opt = trainer.optimizers[0]
            self.lrs.append({names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]})

    def on_train_epoch_end(self, trainer: pl.Trainer, module: ImageModule) -> None:
        self.end.append(self._state(module))


def test_staged_training_freezes_and_scales_named_parts(egamma_pair, tmp_path):
    p, e, *_ = egamma_pair
    stages = '[{epochs: 1, train: ["head.*"]}, {epochs: 1, train: ["*"], lr_scale: {"head.*": 0.25}}]'
    cfg = _cfg(
        [p, e], f"train.stages={stages}", "train.scheduler=none", "train.lr=0.002", "train.early_stopping_patience=1"
    )
    snaps = _Snapshots()
    run_experiment(cfg, tmp_path / "run", extra_callbacks=lambda k: [snaps] if k == 0 else [])
    head = {n for n in snaps.start[0] if n.startswith("head.")}
    body = set(snaps.start[0]) - head
    assert snaps.trainable[0] == head and snaps.trainable[1] == head | body
    changed0 = {n for n in head | body if not torch.equal(snaps.start[0][n], snaps.end[0][n])}
    assert changed0 == head, "stage 1 trains the head only"
    changed1 = {n for n in body if not torch.equal(snaps.start[1][n], snaps.end[1][n])}
    assert changed1 == body, "stage 2 trains everything"
    assert set(snaps.lrs[0].values()) == {0.002}
    assert [snaps.lrs[1][n] for n in sorted(head)] == pytest.approx([0.0005] * len(head))
    assert {snaps.lrs[1][n] for n in body} == {0.002}
    # early stopping (patience 1) waits for the last stage: both epochs ran
    assert len(snaps.end) == 2


def test_loggers_csv_by_default_and_a_missing_package_named(tmp_path, monkeypatch):
    loggers = build_loggers(["csv"], tmp_path / "fold_0", run_name="x", fold=0, run_dir=tmp_path)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]
    assert Path(loggers[0].log_dir) == tmp_path / "fold_0" / "logs"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "mlflow") else real(name, *a),
    )
    with pytest.raises(
        MissingLoggerError, match=r"'tensorboard' needs the 'tensorboard' package.*pip install tensorboard"
    ):
        check_loggers(["csv", "tensorboard"])
    with pytest.raises(MissingLoggerError, match=r"'mlflow' needs the 'mlflow' package.*pip install mlflow"):
        check_loggers(["mlflow"])
    # a run asking for it stops before writing anything
    cfg = _cfg([tmp_path / "nothing.h5"], "train.loggers=[csv, mlflow]")
    with pytest.raises(ImportError, match="mlflow"):
        run_experiment(cfg, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="train.loggers"):
        load_config(ROOT / "configs/egamma_resnet15.yaml", ["train.loggers=[wandb]"])


class _StartWeights(pl.Callback):
    """The model's weights when training starts (after any initialisation from another run)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: pl.Trainer, module: ImageModule) -> None:
        self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def test_init_from_a_finished_run(egamma_pair, tmp_path):
    """Hybrid EffSwin's stage 1: a Swin run's stages, norm and head initialise the hybrid; the same
    architecture takes every weight; another architecture is an error naming the run."""
    p, e, *_ = egamma_pair
    one_epoch = ["train.max_epochs=1", "model.kwargs={}"]
    swin = tmp_path / "swin"
    run_experiment(_cfg([p, e], *one_epoch, "model.name=swin_micro", "name=swin"), swin)
    start = _StartWeights()
    run_experiment(
        _cfg(
            [p, e],
            *one_epoch,
            "model.name=hybrid_effswin_micro",
            f"model.init_from={swin}",
            "model.init_fold=1",
            "train.folds=2",
        ),
        tmp_path / "hybrid",
        extra_callbacks=lambda k: [start] if k == 0 else [],
    )
    src = load_file(swin / "fold_1" / "model.safetensors")
    first = 2  # hybrid_effswin_micro keeps Swin stages 2 and 3
    kept = [k for k in start.state if k.startswith("transformer.layers.")]
    assert kept
    for k in kept:
        i = int(k.split(".")[2])
        twin = "model.layers." + str(i + first) + "." + k.split(".", 3)[3]
        assert torch.equal(start.state[k], src[twin]), k
    for k in ("transformer.norm.weight", "head.fc.weight", "head.fc.bias"):
        assert torch.equal(start.state[k], src["model." + k.removeprefix("transformer.")]), k

    again = _StartWeights()
    run_experiment(
        _cfg([p, e], *one_epoch, "model.name=swin_micro", f"model.init_from={swin}"),
        tmp_path / "ft",
        extra_callbacks=lambda k: [again] if k == 0 else [],
    )
    assert again.state.keys() == {k.removeprefix("model.") for k in src if k.startswith("model.")}
    src0 = load_file(swin / "fold_0" / "model.safetensors")
    assert all(torch.equal(v, src0["model." + k]) for k, v in again.state.items())
    with pytest.raises(ValueError, match=r"model\.init_from: .*swin fold 0 holds a different architecture"):
        run_experiment(_cfg([p, e], *one_epoch, f"model.init_from={swin}"), tmp_path / "bad")
