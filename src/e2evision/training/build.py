"""The training module of a config, untrained or initialised from a finished run.

The trainer builds every fold's module here, and :func:`e2evision.rundir.load_fold` rebuilds a
trained fold with the same call, so a reloaded fold is exactly the trained one.
"""

from __future__ import annotations

import os

import torch

from e2evision.config import ExperimentConfig
from e2evision.datasets.task import get_task
from e2evision.training.module import ImageModule


def build_module(
    cfg: ExperimentConfig,
    image_shape: tuple[int, int, int],
    task: str,
    num_classes: int = 2,
    target_shift: float = 0.0,
    target_scale: float = 1.0,
) -> ImageModule:
    """The LightningModule of ``cfg`` for images of ``image_shape`` (C, H, W), untrained."""
    from e2evision.models import create_model
    from e2evision.transforms import (
        ChannelNormalizer,
        TestTimeFlips,
        build_augment,
        build_geometry,
        output_size,
    )

    c, h, w = image_shape
    pp, aug = cfg.preprocess, cfg.augment
    normalizer = ChannelNormalizer(
        c, pp.normalize, pp.clip, pp.zero_suppression, pp.channel_scale, per_sample=pp.per_sample, log1p=pp.log1p
    )
    geometry = build_geometry(pp.resize, pp.crop, pp.pad)
    size = (h, w)
    if pp.lens_roi is not None:
        from torch import nn

        from e2evision.transforms.lensing import LensCanonicalize

        roi = LensCanonicalize(pp.lens_roi.size, rotate=pp.lens_roi.rotate, method=pp.lens_roi.method)
        geometry = nn.Sequential(roi, geometry)
        size = (pp.lens_roi.size, pp.lens_roi.size)
    n_scalars = len(cfg.data.scalars)
    scalar_normalizer = ChannelNormalizer(n_scalars, pp.scalar_normalize) if n_scalars else None
    outputs = get_task(task).n_outputs(num_classes)
    kwargs = dict(cfg.model.kwargs)
    if n_scalars:
        if kwargs.get("num_scalars", n_scalars) != n_scalars:
            raise ValueError(f"model.kwargs.num_scalars={kwargs['num_scalars']} but data.scalars lists {n_scalars}")
        kwargs["num_scalars"] = n_scalars
    model = create_model(
        cfg.model.name,
        in_chans=c,
        img_size=output_size(size, pp.resize, pp.crop, pp.pad),
        num_outputs=outputs,
        **kwargs,
    )
    augment = build_augment(aug.flip_eta, aug.flip_phi, aug.p, aug.roll_phi, aug.rot90, aug.flip_about)
    test_time = TestTimeFlips(aug.flip_eta, aug.flip_phi, aug.flip_about) if aug.test_time else None
    return ImageModule(
        model,
        normalizer,
        cfg.train,
        augment,
        geometry,
        task=task,  # type: ignore[arg-type]
        num_classes=num_classes,
        target_shift=target_shift,
        target_scale=target_scale,
        scalar_normalizer=scalar_normalizer,
        test_time=test_time,
    )


def init_from_run(model: torch.nn.Module, run_dir: str | os.PathLike[str], fold: int = 0) -> str:
    """Initialise ``model`` from fold ``fold`` of a finished run (safetensors only); returns what was copied.

    * A hybrid model (``load_swin_weights``) from a Swin run takes the Swin stages it keeps, the
      final norm and, when the output sizes agree, the head: the published Hybrid EffSwin starts
      from a trained Swin.
    * Otherwise the architectures must match; every weight is copied, except a head whose output
      size differs (a new task), which keeps its fresh initialisation.
    """
    from e2evision.models.swin import SwinTransformer
    from e2evision.rundir import load_fold_module

    source = load_fold_module(run_dir, fold).model
    where = f"{run_dir} fold {fold}"
    same_head = _head_shapes(source) == _head_shapes(model)
    if hasattr(model, "load_swin_weights") and isinstance(source, SwinTransformer):
        try:
            model.load_swin_weights(source, head=same_head)  # type: ignore[operator]
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"model.init_from: {where} does not fit this hybrid: {err}") from None
        return f"Swin stages, norm{' and head' if same_head else ''} from {where}"
    theirs, mine = source.state_dict(), model.state_dict()
    skipped = [k for k in mine if k.startswith("head.") and k in theirs and theirs[k].shape != mine[k].shape]
    wanted = {k: v for k, v in theirs.items() if k not in skipped}
    bad = sorted(set(wanted) ^ (set(mine) - set(skipped)))
    bad += [k for k in wanted if k in mine and wanted[k].shape != mine[k].shape]
    if bad:
        raise ValueError(
            f"model.init_from: {where} holds a different architecture ({getattr(source, 'model_name', '?')}); "
            f"mismatched weights: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
        )
    model.load_state_dict(wanted, strict=False)
    return f"all weights{' but the head' if skipped else ''} from {where}"


def _head_shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for n, p in model.named_parameters() if n.startswith("head.")]
