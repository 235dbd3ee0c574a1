"""Classic CNN baselines (models/cnn.py): shapes, gradients, sizes, parameter counts, fusion, tracing."""

from __future__ import annotations

import pytest
import torch

from e2evision.models import count_parameters, create_model, get_entry, list_models
from e2evision.models.cnn import InceptionModule, PadToMin, chain_min_input, chain_output_size

HAND_WRITTEN = ["simple_cnn", "lenet5", "alexnet", "vgg11", "vgg16", "inception"]
TIMM = ["resnet18", "resnet50", "efficientnet_b0", "efficientnet_b3"]
ALL = HAND_WRITTEN + TIMM
# (channels, height, width): e/γ crops, quark/gluon jets, boosted-top / top-mass jets,
# DeepLense common test set, DeepLense Model II/III.
GEOMETRIES = [(2, 32, 32), (3, 125, 125), (8, 125, 125), (1, 150, 150), (1, 64, 64)]
# Budget (< 60 s for this file on 2 CPU cores): every model of a million parameters or more runs
# the 125 × 125 and 150 × 150 geometries with one image (training step and eval check); the
# batch-2 shape is checked at 32 × 32 and 64 × 64 for all models, and everywhere for the two small
# ones.
SMALL = {"simple_cnn", "lenet5"}


def batch_for(name: str, h: int, w: int) -> int:
    return 2 if (name in SMALL or min(h, w) < 125) else 1


def conv(i: int, o: int, k: int, bias: bool = True) -> int:
    return i * o * k * k + (o if bias else 0)


def linear(i: int, o: int) -> int:
    return i * o + o


def bn(c: int) -> int:
    return 2 * c


def test_all_models_are_registered_as_cnns_with_a_source():
    assert set(ALL) <= set(list_models())
    for name in ALL:
        entry = get_entry(name)
        assert entry.family == "cnn"
        assert entry.source and entry.description


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("c,h,w", GEOMETRIES, ids=[f"{c}x{h}x{w}" for c, h, w in GEOMETRIES])
def test_shapes_backward_and_eval_determinism(name, c, h, w):
    torch.manual_seed(0)
    model = create_model(name, in_chans=c, img_size=(h, w), num_outputs=3)
    batch = batch_for(name, h, w)
    x = torch.randn(batch, c, h, w)
    out = model(x)
    assert out.shape == (batch, 3)
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    model.eval()
    x = torch.randn(batch, c, h, w)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (batch, 3)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, second, rtol=0, atol=0)


# ---- parameter counts from the layer lists, independently of the code ------------------------


@pytest.mark.parametrize("c", [2, 8])
def test_simple_cnn_parameter_count(c):
    size = 32 if c == 2 else 125
    m = create_model("simple_cnn", in_chans=c, img_size=size, num_outputs=3)
    expected = conv(c, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3)  # three conv–ReLU–pool blocks
    expected += linear(64 * 4 * 4, 128) + linear(128, 3)  # adaptive pool 4×4, FC 128, head
    assert count_parameters(m) == expected
    assert m.num_features == 128


@pytest.mark.parametrize("c,size", [(2, 32), (8, 125), (1, 150)])
def test_lenet5_parameter_count(c, size):
    m = create_model("lenet5", in_chans=c, img_size=size, num_outputs=3)
    expected = conv(c, 6, 5) + conv(6, 16, 5) + linear(16 * 5 * 5, 120) + linear(120, 84) + linear(84, 3)
    assert count_parameters(m) == expected


def test_vgg11_parameter_count():
    m = create_model("vgg11", in_chans=8, img_size=125, num_outputs=3)
    widths = [8, 64, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(conv(i, o, 3) + bn(o) for i, o in zip(widths[:-1], widths[1:]))
    expected += linear(512, 256) + linear(256, 3)
    assert count_parameters(m) == expected


@pytest.mark.parametrize("size,kernel", [(32, 5), (125, 7), (224, 11)])
def test_alexnet_parameter_count_and_stem(size, kernel):
    with torch.device("meta"):  # the 224 model is only counted
        m = create_model("alexnet", in_chans=2, img_size=size, num_outputs=3)
    expected = conv(2, 64, kernel) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) + conv(256, 256, 3)
    expected += linear(256 * 6 * 6, 1024) + linear(1024, 1024) + linear(1024, 3)
    assert count_parameters(m) == expected
    assert m.features[0].kernel_size == (kernel, kernel)
    assert m.stem_stride == {5: 1, 7: 2, 11: 4}[kernel]


def test_inception_module_parameter_count():
    m = create_model("inception", in_chans=2, img_size=32, num_outputs=3)
    i3a = m.blocks[0]

    def cbr(i, o, k):  # bias-free conv + batch norm
        return conv(i, o, k, bias=False) + bn(o)

    expected = cbr(192, 64, 1)  # 1×1 branch
    expected += cbr(192, 96, 1) + cbr(96, 128, 3)  # 1×1 reduce → 3×3
    expected += cbr(192, 16, 1) + cbr(16, 32, 5)  # 1×1 reduce → 5×5
    expected += cbr(192, 32, 1)  # max-pool → 1×1 projection
    assert count_parameters(i3a) == expected
    assert i3a.out_channels == 256
    assert m.num_features == 832
    assert sum(isinstance(b, InceptionModule) for b in m.blocks) == 7  # 3a–3b, 4a–4e


# ---- size handling ---------------------------------------------------------------------------


def test_size_helpers_match_the_layers():
    lenet = create_model("lenet5", in_chans=1, img_size=28)
    assert chain_min_input(lenet.features) == 16
    assert chain_output_size(lenet.features, (32, 32)) == (5, 5)
    assert chain_output_size(lenet.features, (15, 15)) is None
    with pytest.raises(RuntimeError):
        lenet.features(torch.randn(1, 1, 15, 15))
    # LeCun's MNIST padding: 28 → 32, symmetric.
    assert lenet.pad.active and lenet.pad.padding == (2, 2, 2, 2)
    assert not create_model("lenet5", in_chans=1, img_size=64).pad.active
    vgg = create_model("vgg11", in_chans=2, img_size=(8, 31))
    assert vgg.pad.padding == (0, 1, 12, 12) and vgg.pad.out_size == (32, 32)
    simple = create_model("simple_cnn", in_chans=2, img_size=32)
    assert chain_min_input(simple.features) == 8 and not simple.pad.active
    pad = PadToMin((5, 6), 8)
    assert pad(torch.ones(1, 1, 5, 6)).shape == (1, 1, 8, 8)
    # AlexNet: stride-1 stem for small images needs 15 pixels; smaller ones are padded.
    alex = create_model("alexnet", in_chans=1, img_size=10)
    assert chain_min_input(alex.features) == 15 and alex.pad.out_size == (15, 15)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_timm_trunk_keeps_a_two_by_two_map(name):
    for size, reduced, pad in [(32, True, (0, 0, 0, 0)), (64, False, (0, 0, 0, 0)), (8, True, (4, 5, 4, 5))]:
        m = create_model(name, in_chans=2, img_size=size).eval()
        with torch.no_grad():
            fmap = m.backbone.forward_features(m.pad(torch.zeros(1, 2, size, size)))
        assert m.reduced_stem is reduced and m.pad.padding == pad
        assert fmap.shape[-2:] == (2, 2)


def test_stem_choice_follows_image_size():
    with torch.device("meta"):
        _check_stem_choice()


def _check_stem_choice():
    def strides(name, sizes):
        return [create_model(name, in_chans=1, img_size=s).stem_stride for s in sizes]

    assert strides("alexnet", (32, 64, 95, 96, 125, 150, 191, 192, 224)) == [1, 1, 1, 2, 2, 2, 2, 4, 4]
    assert strides("inception", (32, 63, 64, 125)) == [1, 1, 4, 4]
    assert create_model("alexnet", in_chans=1, img_size=125, stem_stride=4).stem_stride == 4


# ---- scalar fusion ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "lenet5", "inception"])
def test_scalar_fusion(name):
    torch.manual_seed(0)
    m = create_model(name, in_chans=8, img_size=32, num_outputs=1, num_scalars=4).eval()
    assert m.head.fc.in_features == m.num_features + 4
    x, s = torch.randn(2, 8, 32, 32), torch.randn(2, 4)
    with torch.no_grad():
        out = m(x, s)
        torch.nn.init.ones_(m.head.fc.weight)  # make the scalar weights visible
        a, b = m(x, s), m(x, s + 1.0)
    assert out.shape == (2, 1)
    torch.testing.assert_close(b - a, torch.full_like(a, 4.0))
    with pytest.raises(ValueError, match="pass scalars"):
        m(x)


def test_drop_rate_reaches_the_head():
    m = create_model("efficientnet_b0", in_chans=2, img_size=32, drop_rate=0.3)
    assert isinstance(m.head.drop, torch.nn.Dropout) and m.head.drop.p == 0.3
    assert m.num_features == 1280
    m = create_model("vgg11", in_chans=2, img_size=32, drop_rate=0.2)
    assert m.head.drop.p == 0.2


def test_meta_device_build_for_the_model_table():
    with torch.device("meta"):
        for name in ALL:
            m = create_model(name, in_chans=8, img_size=125)
            assert count_parameters(m) > 0


# ---- export ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_tiny_non_square_images_single_image_training_and_jit_trace(name):
    """The registry's smallest side (8) in a non-square image is handled inside the model (LeNet-5,
    AlexNet, VGG and the timm models zero-pad here); batch norm can train on a single image (no
    1 × 1 final map); the traced model (TorchScript) gives the eager output on a fresh input."""
    torch.manual_seed(0)
    c, h, w = 3, 8, 40
    m = create_model(name, in_chans=c, img_size=(h, w), num_outputs=3)
    m(torch.randn(1, c, h, w)).square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        traced = torch.jit.trace(m, torch.randn(2, c, h, w), check_trace=False)
        x = torch.randn(2, c, h, w)  # a fresh input: nothing may be baked in
        eager = m(x)
        torch.testing.assert_close(traced(x), eager, rtol=1e-5, atol=1e-6)
    assert eager.shape == (2, 3) and torch.isfinite(eager).all()


def test_torch_export_with_scalars():
    m = create_model("lenet5", in_chans=8, img_size=28, num_outputs=2, num_scalars=3).eval()
    x, s = torch.randn(2, 8, 28, 28), torch.randn(2, 3)
    exported = torch.export.export(m, (x, s))
    x2, s2 = torch.randn(2, 8, 28, 28), torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x2, s2), m(x2, s2), rtol=1e-5, atol=1e-6)
