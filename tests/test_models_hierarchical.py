"""Hierarchical models: Swin, CoAtNet and Hybrid EffSwin (dc250601/GSOC), micro and full presets."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torch.nn.functional as F

from e2evision.models import count_parameters, create_model, get_entry, list_models
from e2evision.models.coatnet import CoAtNet
from e2evision.models.hybrid import HybridEffSwin
from e2evision.models.padding import pad_to_multiple
from e2evision.models.swin import SwinTransformer, stage_window

MICRO = ["swin_micro", "coatnet_micro", "hybrid_effswin_micro"]
FULL = ["swin_tiny", "coatnet_0", "hybrid_effswin"]
GEOMETRIES = [(2, 32, 32), (3, 125, 125), (8, 125, 125), (1, 150, 150), (1, 64, 64)]
FULL_GEOMETRIES = [(2, 32, 32, 2), (1, 150, 150, 1)]  # (C, H, W, batch); batch 1 for the big one
# Expected per-stage Swin windows from the documented rule (grids after padding to ×32).
SWIN_WINDOWS = {
    32: [(4, 4), (4, 4), (2, 2), (1, 1)],  # grids 8, 4, 2, 1
    64: [(4, 4), (4, 4), (4, 4), (2, 2)],  # grids 16, 8, 4, 2
    125: [(4, 4)] * 4,  # padded 128: grids 32, 16, 8, 4
    150: [(5, 5)] * 4,  # padded 160: grids 40, 20, 10, 5
}


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Run this module single-threaded, restoring the setting afterwards.

    On the shared 2-core machine, two OpenMP threads competing with other processes spin at
    barriers and ran these tests 3-7x slower (220 s vs 33 s of CPU); one thread is immune to that
    and costs little on an idle machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check_shapes_backward_eval(name: str, c: int, h: int, w: int, batch: int = 2) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_chans=c, img_size=(h, w), num_outputs=3)
    x = torch.randn(batch, c, h, w)
    out = model(x)
    assert out.shape == (batch, 3)
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_registry_names_families_sources():
    names = set(list_models())
    assert set(MICRO + FULL) <= names
    for n in MICRO + FULL:
        entry = get_entry(n)
        assert entry.family == n.split("_")[0]  # swin / coatnet / hybrid
        assert "dc250601/GSOC" in entry.source
    assert "0.8083" in get_entry("swin_tiny").source
    assert "0.8146" in get_entry("coatnet_0").source
    assert "0.8144" in get_entry("hybrid_effswin").source


@pytest.mark.parametrize("c,h,w", GEOMETRIES)
@pytest.mark.parametrize("name", MICRO)
def test_micro_shapes_backward_and_eval_determinism(name, c, h, w):
    _check_shapes_backward_eval(name, c, h, w)


@pytest.mark.parametrize("c,h,w,batch", FULL_GEOMETRIES)
@pytest.mark.parametrize("name", FULL)
def test_full_shapes_backward_and_eval_determinism(name, c, h, w, batch):
    _check_shapes_backward_eval(name, c, h, w, batch)


@pytest.mark.parametrize("name", MICRO)
def test_rectangular_images_and_scalar_fusion(name):
    model = create_model(name, in_chans=2, img_size=(40, 90), num_outputs=2, num_scalars=3).eval()
    assert model.padded_size == (64, 96)
    with torch.no_grad():
        assert model(torch.randn(2, 2, 40, 90), torch.randn(2, 3)).shape == (2, 2)


def test_padding_helper_and_window_rule():
    assert pad_to_multiple((125, 125), 32) == ((1, 2, 1, 2), (128, 128))
    assert pad_to_multiple((150, 150), 32) == ((5, 5, 5, 5), (160, 160))
    assert pad_to_multiple((32, 64), 32) == ((0, 0, 0, 0), (32, 64))
    # grid <= target: global window; a divisor in [ceil(t/2), t]: exact tiling; else balanced windows.
    assert [stage_window(g, 7) for g in (1, 5, 7, 8, 32, 40, 56)] == [1, 5, 7, 4, 4, 5, 7]
    assert stage_window(11, 7) == 6 and stage_window(9, 7) == 5 and stage_window(13, 7) == 7


@pytest.mark.parametrize("c,h,w", GEOMETRIES)
def test_swin_windows_divide_the_token_grids(c, h, w):
    model = create_model("swin_micro", in_chans=c, img_size=(h, w))
    assert isinstance(model, SwinTransformer)
    assert all(p % 32 == 0 and 0 <= p - i < 32 for p, i in zip(model.padded_size, (h, w)))
    assert model.window_sizes == SWIN_WINDOWS[h]
    for stage, grid, window in zip(model.layers, model.grid_sizes, model.window_sizes):
        for j, block in enumerate(stage.blocks):  # what timm's blocks actually use
            assert tuple(block.input_resolution) == grid
            assert tuple(block.window_size) == window
            assert grid[0] % block.window_size[0] == 0 and grid[1] % block.window_size[1] == 0
            # every second block shifts, unless one window covers the whole grid
            expect_shift = j % 2 == 1 and any(g > wi for g, wi in zip(grid, window))
            assert any(block.shift_size) == expect_shift


@pytest.mark.parametrize("c,h,w", GEOMETRIES)
def test_coatnet_pads_to_a_multiple_of_32(c, h, w):
    model = create_model("coatnet_micro", in_chans=c, img_size=(h, w))
    assert isinstance(model, CoAtNet)
    expected = {32: 32, 64: 64, 125: 128, 150: 160}[h]
    assert model.padded_size == (expected, expected) and expected % 32 == 0
    # Transformer stages attend over their whole map: the relative-position table covers it.
    for i in (2, 3):
        side = expected // 2 ** (i + 2)
        for block in model.stages[i].blocks:
            assert tuple(block.attn.rel_pos.window_size) == (side, side)
    with torch.no_grad():
        fmap = model.eval().forward_feature_map(torch.randn(1, c, h, w))
    assert fmap.shape == (1, model.num_features, expected // 32, expected // 32)


@pytest.mark.parametrize("name", ["swin_micro", "coatnet_micro", "hybrid_effswin_micro"])
def test_padding_is_static_zero_padding(name):
    """A 125 model equals the 128 model (same weights) on the explicitly zero-padded image."""
    torch.manual_seed(0)
    m125 = create_model(name, in_chans=3, img_size=125, num_outputs=2).eval()
    m128 = create_model(name, in_chans=3, img_size=128, num_outputs=2).eval()
    m128.load_state_dict(m125.state_dict())
    x = torch.randn(2, 3, 125, 125)
    with torch.no_grad():
        torch.testing.assert_close(m125(x), m128(F.pad(x, (1, 2, 1, 2))), rtol=0, atol=0)


# ---------------------------------------------------------------- parameter counts


def swin_stage_expected(i, embed, depth, heads, window, mlp=4):
    """Parameters of Swin stage ``i``: patch merging (for i > 0) and ``depth`` blocks."""
    d, (wh, ww) = embed * 2**i, window
    n = 2 * 4 * (d // 2) + 4 * (d // 2) * d if i > 0 else 0  # LayerNorm(4C) + Linear(4C -> 2C), no bias
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (2 * wh - 1) * (2 * ww - 1) * heads
    block += (d * mlp * d + mlp * d) + (mlp * d * d + d)
    return n + depth * block


def swin_expected(c, embed, depths, heads, windows, n_out, patch=4):
    """Swin parameters from the architecture definition (patch embed, stages, norm, head)."""
    n = c * patch * patch * embed + embed + 2 * embed  # conv + LayerNorm
    n += sum(swin_stage_expected(i, embed, *a) for i, a in enumerate(zip(depths, heads, windows)))
    width = embed * 2 ** (len(depths) - 1)
    return n + 2 * width + (width + 1) * n_out


def coatnet_expected(c, stem, dims, depths, types, padded, n_out, dim_head=32):
    """CoAtNet (timm blocks) parameters from the block definitions."""
    n = c * 9 * stem + 2 * stem + 9 * stem * stem  # conv, BN, conv
    prev, stride = stem, 2
    for out, depth, kind in zip(dims, depths, types):
        stride *= 2
        fh, fw = padded[0] // stride, padded[1] // stride
        for j in range(depth):
            inp = prev if j == 0 else out
            b = inp * out + out if j == 0 else 0  # shortcut: pool + 1x1 conv (bias)
            b += 2 * inp  # pre-norm (BN or LayerNorm)
            if kind == "C":
                mid, rd = 4 * out, out // 4
                b += inp * mid + 2 * mid + 9 * mid + 2 * mid  # 1x1, BN, dw 3x3, BN
                b += (mid * rd + rd) + (rd * mid + mid) + (mid * out + out)  # SE, 1x1 out (bias)
            else:
                b += (inp * 3 * out + 3 * out) + (2 * fh - 1) * (2 * fw - 1) * (out // dim_head)
                b += (out * out + out) + 2 * out + (out * 4 * out + 4 * out) + (4 * out * out + out)
            n += b
        prev = out
    return n + 2 * prev + (prev + 1) * n_out


def effnet_b0_trunk_expected(c):
    """EfficientNet-B0 stem + stages 1-3 (stride 8, 40 channels), from the published table."""

    def se(mid, rd):
        return mid * rd + rd + rd * mid + mid

    def ir(inp, out, k):
        mid = 6 * inp
        return inp * mid + 2 * mid + k * k * mid + 2 * mid + se(mid, inp // 4) + mid * out + 2 * out

    stem = c * 9 * 32 + 2 * 32
    ds = 9 * 32 + 2 * 32 + se(32, 8) + 32 * 16 + 2 * 16
    return stem + ds + ir(16, 24, 3) + ir(24, 24, 3) + ir(24, 40, 5) + ir(40, 40, 5)


@pytest.mark.parametrize("c,size", [(2, 32), (8, 125)])
def test_micro_parameter_counts_match_the_definitions(c, size):
    padded = (size + 31) // 32 * 32
    win = SWIN_WINDOWS[size]
    swin = create_model("swin_micro", in_chans=c, img_size=size, num_outputs=3)
    assert count_parameters(swin) == swin_expected(c, 32, (1, 1, 2, 1), (1, 2, 4, 8), win, 3)
    coat = create_model("coatnet_micro", in_chans=c, img_size=size, num_outputs=3)
    expected = coatnet_expected(c, 16, (32, 64, 128, 256), (1, 1, 2, 1), "CCTT", (padded, padded), 3)
    assert count_parameters(coat) == expected
    hyb = create_model("hybrid_effswin_micro", in_chans=c, img_size=size, num_outputs=3)
    groups = {k: sum(p.numel() for p in v) for k, v in hyb.parameter_groups().items()}
    assert groups["cnn"] == effnet_b0_trunk_expected(c)
    assert groups["proj"] == 40 * 64 + 2 * 64  # 1x1 conv (no bias) + BN
    stages = [swin_stage_expected(i, 32, d, h, win[i]) for i, d, h in [(2, 2, 4), (3, 1, 8)]]
    assert groups["transformer"] == sum(stages) + 2 * 256  # Swin stages 3-4 + final LayerNorm
    assert groups["head"] == 256 * 3 + 3


def test_full_parameter_counts_close_to_published():
    rows = {}
    with torch.device("meta"):  # count without allocating
        for name in FULL + MICRO:
            for c, s in [(2, 32), (8, 125), (3, 224)]:
                m = create_model(name, in_chans=c, img_size=s)
                rows[name, c, s] = (count_parameters(m), count_parameters(m) - count_parameters(m.head))
        timm_swin = count_parameters(timm.create_model("swin_tiny_patch4_window7_224", num_classes=0))
        timm_coat = count_parameters(timm.create_model("coatnet_0_224"))
    print("\nname                   params@2x32x32  params@8x125x125  features@3x224x224")
    for name in FULL + MICRO:
        print(f"{name:22s} {rows[name, 2, 32][0]:>14,d} {rows[name, 8, 125][0]:>17,d} {rows[name, 3, 224][1]:>19,d}")
    # Swin-T at 224 (window 7 everywhere) is exactly timm's Swin-T without head: 27.52 M.
    assert rows["swin_tiny", 3, 224][1] == timm_swin == 27_519_354
    # timm's coatnet_0_224 adds a 768 -> 768 pre-logits layer and a 1000-class fc to our features.
    assert rows["coatnet_0", 3, 224][1] == timm_coat - (768 * 768 + 768) - (768 * 1000 + 1000)
    assert 24.0e6 < rows["coatnet_0", 3, 224][1] + 768 * 1000 + 1000 < 25.5e6  # paper: 25 M with head
    for c, s in [(2, 32), (8, 125)]:
        assert 27.4e6 < rows["swin_tiny", c, s][1] < 27.6e6  # smaller windows -> smaller bias tables
        assert 23.5e6 < rows["coatnet_0", c, s][1] < 23.8e6
        assert 26.3e6 < rows["hybrid_effswin", c, s][1] < 26.6e6
        assert 1.0e6 < rows["swin_micro", c, s][0] < 2.0e6 and 1.0e6 < rows["coatnet_micro", c, s][0] < 2.0e6


def test_meta_device_build_and_forward():
    """The model table / FLOP counter build and run every model on the meta device."""
    with torch.device("meta"):
        for name in FULL + MICRO:
            model = create_model(name, in_chans=8, img_size=125, num_outputs=2).eval()
            assert model(torch.zeros(1, 8, 125, 125)).shape == (1, 2)


# ---------------------------------------------------------------- hybrid specifics


@pytest.mark.parametrize("name", ["hybrid_effswin_micro", "hybrid_effswin"])
def test_hybrid_parameter_groups_partition_all_parameters(name):
    with torch.device("meta"):  # structure only
        model = create_model(name, in_chans=2, img_size=32)
    assert isinstance(model, HybridEffSwin)
    groups = model.parameter_groups()
    assert list(groups) == ["cnn", "proj", "transformer", "head"]
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))  # no parameter in two groups
    assert set(ids) == {id(p) for p in model.parameters()}  # and none left out
    assert all(groups.values())
    model.set_training_stage(2)
    assert {k for k, v in groups.items() if all(p.requires_grad for p in v)} == {"cnn", "proj"}
    assert not any(p.requires_grad for p in groups["transformer"] + groups["head"])
    model.set_training_stage(3)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("c,h,w", GEOMETRIES)
def test_hybrid_cnn_output_stride_is_8(c, h, w):
    model = create_model("hybrid_effswin_micro", in_chans=c, img_size=(h, w)).eval()
    strides = 1
    for m in model.cnn.modules():
        if isinstance(m, torch.nn.Conv2d):
            strides *= m.stride[0]
    assert strides == 8 and model.cnn_stride == 8
    with torch.no_grad():
        feats = model.forward_cnn(torch.randn(1, c, h, w))
    ph, pw = model.padded_size
    assert feats.shape == (1, model.cnn_channels, ph // 8, pw // 8)
    assert tuple(feats.shape[2:]) == model.cnn_grid == model.grid_sizes[1]
    # Stage 3 (first kept Swin stage) merges stride 8 -> 16 and uses the Swin model's windows.
    assert model.transformer.layers[0].input_resolution == model.grid_sizes[1]
    assert model.window_sizes == SWIN_WINDOWS[h]


def test_full_hybrid_uses_efficientnet_b3_to_stride_8_and_swin_tiny_widths():
    with torch.device("meta"):  # structure only
        model = create_model("hybrid_effswin", in_chans=2, img_size=32)
    assert model.cnn_channels == 48 and len(model.cnn.blocks) == 3  # B3 stages 1-3
    assert model.proj[0].in_channels == 48 and model.proj[0].out_channels == 192
    stage3, stage4 = model.transformer.layers
    assert stage3.downsample.reduction.in_features == 4 * 192 and len(stage3.blocks) == 6
    assert stage4.downsample.reduction.out_features == 768 and len(stage4.blocks) == 2
    assert model.num_features == 768


def test_hybrid_takes_the_trained_swin_weights():
    torch.manual_seed(0)
    swin = create_model("swin_micro", in_chans=2, img_size=125, num_outputs=2)
    hyb = create_model("hybrid_effswin_micro", in_chans=2, img_size=125, num_outputs=2)
    hyb.load_swin_weights(swin)
    theirs = dict(swin.named_parameters())
    for name, p in hyb.transformer.layers.named_parameters():
        i, rest = name.split(".", 1)
        torch.testing.assert_close(p, theirs[f"layers.{int(i) + 2}.{rest}"], rtol=0, atol=0)
    torch.testing.assert_close(hyb.transformer.norm.weight, swin.norm.weight, rtol=0, atol=0)
    torch.testing.assert_close(hyb.head.fc.weight, swin.head.fc.weight, rtol=0, atol=0)
    other = create_model("swin_micro", in_chans=2, img_size=32, num_outputs=2)
    with pytest.raises(ValueError, match="do not match"):
        hyb.load_swin_weights(other)


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("name", MICRO)
def test_trace_and_export_match_eager(name):
    torch.manual_seed(0)
    model = create_model(name, in_chans=3, img_size=125, num_outputs=3).eval()
    x, x2 = torch.randn(2, 3, 125, 125), torch.randn(2, 3, 125, 125)
    with torch.no_grad():
        ref = model(x2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript deprecation and tracer warnings
            traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x2), ref, rtol=1e-5, atol=1e-5)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x2), ref, rtol=1e-5, atol=1e-5)
