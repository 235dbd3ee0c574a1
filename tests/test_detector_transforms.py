"""Input transforms for detector images (per-sample normalisation, signed log1p), and the
"is the model learning?" checks, against independent NumPy computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from e2evision.cli import app
from e2evision.config import load_config
from e2evision.datasets.base import ChannelStats
from e2evision.export.contract import ORDER, ORDER_V1, apply_preprocess
from e2evision.training.health import chance_loss, diagnose, loss_warning, scores_warning
from e2evision.transforms import ChannelNormalizer

ROOT = Path(__file__).resolve().parents[1]


def _sparse(seed: int = 0, shape=(6, 3, 5, 5)) -> np.ndarray:
    """Energies over four orders of magnitude, mostly zeros, with a few negatives (noise)."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0.0, 2.0, shape) * (rng.random(shape) < 0.4)
    x[rng.random(shape) < 0.05] *= -0.01
    x[2, 1] = -np.abs(x[2, 1])  # a channel with nothing positive in one sample: left undivided
    return x.astype(np.float32)


def _reference(x: np.ndarray, per_sample: list[str], log1p: list[float | None]) -> np.ndarray:
    """The transforms written out per sample and channel with plain loops (no shared code)."""
    out = x.astype(np.float64).copy()
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            ch = out[n, c]
            if per_sample[c] == "sum":
                total = ch[ch > 0].sum()
                if total > 0:
                    ch = ch / total
            elif per_sample[c] == "max":
                top = ch.max()
                if top > 0:
                    ch = ch / top
            if log1p[c] is not None:
                ch = np.array([[np.copysign(np.log1p(abs(v) / log1p[c]), v) for v in row] for row in ch])
            out[n, c] = ch
    return out


@pytest.mark.parametrize(
    "per_sample,log1p",
    [
        (["sum", "max", "none"], [0.5, None, 2.0]),
        (["none", "none", "none"], [1.0, 1.0, 1.0]),
        (["max", "sum", "sum"], [None, None, None]),
    ],
)
def test_per_sample_and_log1p_equal_a_loop_computation(per_sample, log1p):
    x = _sparse()
    norm = ChannelNormalizer(3, "none", per_sample=per_sample, log1p=log1p)
    want = _reference(x, per_sample, log1p)
    np.testing.assert_allclose(norm(torch.from_numpy(x)).numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.raw_transform(x), want, rtol=1e-5, atol=1e-6)  # what statistics see


def test_statistics_are_fitted_after_the_log_and_on_the_given_rows_only():
    x = _sparse(1, (40, 2, 4, 4))
    norm = ChannelNormalizer(
        2,
        "zscore",
        clip=4.0,
        zero_suppression=0.05,
        channel_scale=[2.0, 1.0],
        per_sample=["none", "sum"],
        log1p=[0.1, None],
    )
    stats = ChannelStats(2)
    stats.update(norm.raw_transform(x[:30]))  # "training folds": the first 30 samples
    norm.fit(stats)
    z = np.where(np.abs(x) < 0.05, 0.0, x) * np.array([2.0, 1.0])[None, :, None, None]
    pre = _reference(z, ["none", "sum"], [0.1, None])
    mean = pre[:30].transpose(1, 0, 2, 3).reshape(2, -1).mean(1)
    std = pre[:30].transpose(1, 0, 2, 3).reshape(2, -1).std(1)
    want = np.clip((pre - mean[None, :, None, None]) / std[None, :, None, None], -4.0, 4.0)
    np.testing.assert_allclose(norm(torch.from_numpy(x)).numpy(), want, rtol=1e-4, atol=1e-5)
    # the contract (NumPy, written from preprocess.json's description) agrees with the module
    spec = {"order": ORDER, **norm.to_dict()}
    np.testing.assert_allclose(apply_preprocess(x, spec), norm(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-5)


def test_version_one_contracts_still_apply_and_bad_entries_are_named():
    x = _sparse(2, (3, 2, 4, 4))
    spec = {
        "order": ORDER_V1,
        "mode": "scale",
        "zero_suppression": None,
        "channel_scale": [1.0, 1.0],
        "centre": [0.0, 0.0],
        "scale": [2.0, 4.0],
        "clip": None,
    }
    np.testing.assert_allclose(apply_preprocess(x, spec), x / np.array([2.0, 4.0])[None, :, None, None], rtol=1e-6)
    from e2evision.export import ExportError

    with pytest.raises(ExportError, match=r"per_sample\[1\] 'mean' is not sum, max or none"):
        apply_preprocess(x, {**spec, "order": ORDER, "per_sample": ["none", "mean"], "log1p": None})


def test_settings_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match="preprocess.log1p has 3 entries for 2 channels"):
        ChannelNormalizer(2, "none", log1p=[1.0, None, 2.0])
    with pytest.raises(ValueError, match="preprocess.per_sample 'mean' is not one of none, sum, max"):
        ChannelNormalizer(2, "none", per_sample="mean")
    with pytest.raises(ValueError, match="log1p scales must be positive"):
        load_config(ROOT / "configs/egamma_resnet15.yaml", ["preprocess.log1p=[0.0, null]"])
    cfg = load_config(ROOT / "configs/egamma_resnet15.yaml", ["preprocess.log1p=2.0", "preprocess.per_sample=max"])
    norm = ChannelNormalizer(2, "none", per_sample=cfg.preprocess.per_sample, log1p=cfg.preprocess.log1p)
    assert norm.to_dict()["log1p"] == [2.0, 2.0] and norm.to_dict()["per_sample"] == ["max", "max"]


def test_shipped_egamma_configs_treat_energy_and_time_differently():
    for name in ("egamma_resnet15.yaml", "egamma_vit.yaml"):
        pp = load_config(ROOT / "configs" / name).preprocess
        assert isinstance(pp.log1p, list) and pp.log1p[0] is not None and pp.log1p[1] is None, name


# ----------------------------------------------------------------------------- is it learning?
def test_chance_loss_is_the_label_entropy():
    assert chance_loss("binary", np.array([0, 1, 0, 1])) == pytest.approx(np.log(2))
    assert chance_loss("multiclass", np.array([0, 1, 2, 2])) == pytest.approx(
        -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5))
    )
    assert chance_loss("regression", np.array([0.3, 1.2])) is None


def test_loss_warning_fires_only_for_a_flat_curve():
    flat = [{"fold": 0, "epoch": e, "train_loss": v} for e, v in enumerate([0.6935, 0.6932, 0.6931])]
    falling = [{"fold": 0, "epoch": e, "train_loss": v} for e, v in enumerate([0.69, 0.62, 0.58])]
    msg = loss_warning(0, flat, 3, np.log(2))
    assert msg is not None and "not learning" in msg and "0.693" in msg and "train.lr" in msg
    assert loss_warning(0, falling, 3, np.log(2)) is None
    assert loss_warning(0, flat[:2], 3, np.log(2)) is None  # too early to tell
    nan = [{"fold": 1, "epoch": 0, "train_loss": float("nan")}]
    assert "not finite" in loss_warning(1, nan, 3, np.log(2))


def test_collapsed_scores_are_flagged():
    assert "collapsed to one value" in scores_warning(0, np.full(50, 0.5) + 1e-5 * np.arange(50) / 50, "binary")
    assert scores_warning(0, np.linspace(0.3, 0.7, 50), "binary") is None
    warnings = diagnose(
        "binary",
        [],
        np.r_[np.full(10, 0.5), np.linspace(0, 1, 10)],
        np.r_[np.zeros(10, int), np.ones(10, int)],
        np.r_[np.arange(10) % 2, np.arange(10) % 2],
        3,
    )
    assert len(warnings) == 1 and warnings[0].startswith("fold 0:")


@pytest.mark.slow
def test_a_model_that_cannot_learn_is_reported(egamma_pair, tmp_path):
    """A learning rate of ~0 keeps the loss at its start: the CLI, metrics, run.json and report say so."""
    p, e, _, _ = egamma_pair
    out = tmp_path / "frozen"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            str(ROOT / "configs/egamma_resnet15.yaml"),
            "--data",
            str(p),
            "--data",
            str(e),
            "--out",
            str(out),
            "--set",
            "train.lr=1e-12",
            "--set",
            "train.folds=2",
            "--set",
            "train.max_epochs=2",
            "--set",
            "train.not_learning_epochs=2",
            "--set",
            "train.progress=false",
            "--set",
            "train.batch_size=32",
            "--set",
            "model.kwargs.widths=[4, 8]",
            "--set",
            "train.early_stopping_patience=null",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "WARNING resnet15: fold 0: the model is not learning" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 2 and all("not learning" in w for w in metrics["warnings"])
    assert json.loads((out / "run.json").read_text())["warnings"] == metrics["warnings"]
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r.html").read_text()
    assert 'class="badge warn"' in html and "Not learning:" in html
    # the same run with a real learning rate learns and carries no warning
    res = runner.invoke(
        app,
        [
            "train",
            str(ROOT / "configs/egamma_resnet15.yaml"),
            "--data",
            str(p),
            "--data",
            str(e),
            "--out",
            str(tmp_path / "ok"),
            "--set",
            "train.lr=3e-3",
            "--set",
            "train.folds=2",
            "--set",
            "train.max_epochs=3",
            "--set",
            "train.progress=false",
            "--set",
            "train.batch_size=16",
            "--set",
            "model.kwargs.widths=[4, 8]",
            "--set",
            "train.early_stopping_patience=null",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["warnings"] == []


# ----------------------------------------------------------------------------- flips about the seed
@pytest.mark.parametrize("n", [8, 7])
def test_flips_about_the_central_pixel_keep_it_in_place(n):
    from e2evision.transforms import RandomFlips

    x = torch.from_numpy(np.random.default_rng(3).normal(size=(4, 2, n, n)).astype(np.float32))
    flips = RandomFlips(flip_eta=True, flip_phi=True, p=1.0, about="pixel").train()
    idx = (n - np.arange(n)) % n if n % 2 == 0 else n - 1 - np.arange(n)  # i -> n - i, or n - 1 - i
    want = x.numpy()[:, :, idx][:, :, :, idx]
    np.testing.assert_array_equal(flips(x).numpy(), want)
    assert torch.equal(flips(x)[:, :, n // 2, n // 2], x[:, :, n // 2, n // 2])  # the seed pixel stays
    centre = RandomFlips(flip_eta=True, flip_phi=True, p=1.0, about="centre").train()
    np.testing.assert_array_equal(centre(x).numpy(), x.numpy()[:, :, ::-1, ::-1])
    assert torch.equal(flips.eval()(x), x)  # evaluation never augments
    with pytest.raises(ValueError, match="augment.flip_about must be one of centre, pixel"):
        RandomFlips(True, True, about="seed")


@pytest.mark.parametrize("about", ["pixel", "centre"])
@pytest.mark.parametrize("dims", [(True, True), (False, True)])
def test_test_time_flips_average_the_network_over_every_mirror_image(about, dims):
    from e2evision.transforms import TestTimeFlips

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2, 8, 8)).astype(np.float32)
    w = rng.normal(size=(2 * 8 * 8, 2)).astype(np.float32)
    net = lambda t: t.reshape(t.shape[0], -1) @ torch.from_numpy(w)  # noqa: E731 - a fixed linear "network"

    tta = TestTimeFlips(*dims, about=about)
    got = tta.average(net(tta.views(torch.from_numpy(x))), 3).numpy()
    # Independently: the mirror index maps in NumPy, every subset of the flips, the mean output.
    idx = (8 - np.arange(8)) % 8 if about == "pixel" else 7 - np.arange(8)
    views = [x]
    for axis, on in ((2, dims[0]), (3, dims[1])):
        if on:
            views += [np.take(v, idx, axis=axis) for v in views]
    want = np.mean([v.reshape(3, -1) @ w for v in views], axis=0)
    assert tta.n_views == len(views) == 2 ** sum(dims)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_test_time_flips_act_in_evaluation_only_and_need_flips():
    from e2evision.config import load_config
    from e2evision.training.build import build_module

    cfg = load_config(
        ROOT / "configs/egamma_resnet15.yaml",
        ["model.kwargs.widths=[4, 8]", "augment.test_time=true", "augment.flip_about=pixel"],
    )
    module = build_module(cfg, (2, 32, 32), "binary", 2)
    x = torch.from_numpy(np.random.default_rng(1).gamma(1.0, size=(5, 2, 32, 32)).astype(np.float32))
    module.eval()
    with torch.no_grad():
        one = module.test_time
        module.test_time = None
        plain = [module.raw(v) for v in one.views(x).split(5)]  # the network on each view, one by one
        module.test_time = one
        tta = module.raw(x)
        module.train()  # training sees one view per image (its random flips do the rest)
        train_out = module.raw(x)
        module.test_time = None
        train_plain = module.raw(x)
    torch.testing.assert_close(tta, torch.stack(plain).mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(tta, plain[0])  # the average is not the plain output
    assert train_out.shape == (5,)
    torch.testing.assert_close(train_out, train_plain, rtol=0, atol=0)
    with pytest.raises(ValueError, match="augment.test_time averages over the flips"):
        load_config(
            ROOT / "configs/egamma_resnet15.yaml",
            ["augment.flip_eta=false", "augment.flip_phi=false", "augment.test_time=true"],
        )
