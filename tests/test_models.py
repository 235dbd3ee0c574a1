"""Model registry and the two walking-skeleton architectures."""

from __future__ import annotations

import pytest
import torch

from e2evision.models import (
    count_flops,
    count_parameters,
    create_model,
    get_entry,
    list_models,
    model_table,
)
from e2evision.models.resnet15 import ResNet15
from e2evision.models.vit import PatchEmbed, VisionTransformer, default_patch_size

GEOMETRIES = [(2, 32), (3, 125)]


def test_registry_lists_the_skeleton_models():
    names = list_models()
    assert {"resnet15", "vit_micro", "vit_tiny", "vit_small"} <= set(names)
    assert list_models("vit_*") == [n for n in names if n.startswith("vit_")]
    with pytest.raises(ValueError, match="unknown model 'nope'; available: .*resnet15"):
        create_model("nope", in_chans=2, img_size=32)


@pytest.mark.parametrize("name", ["resnet15", "vit_micro", "vit_tiny"])
@pytest.mark.parametrize("in_chans,size", GEOMETRIES)
def test_shapes_backward_and_eval_determinism(name, in_chans, size):
    torch.manual_seed(0)
    model = create_model(name, in_chans=in_chans, img_size=size, num_outputs=3)
    x = torch.randn(2, in_chans, size, size)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_vit_small_builds_at_both_geometries():
    for c, s in GEOMETRIES:
        model = create_model("vit_small", in_chans=c, img_size=s)
        with torch.no_grad():
            assert model(torch.randn(1, c, s, s)).shape == (1, 1)


def test_resnet15_matches_published_architecture():
    m = create_model("resnet15", in_chans=2, img_size=32)
    assert isinstance(m, ResNet15)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size != (1, 1)]
    assert len(convs) == 15  # stem + 7 blocks × 2
    assert convs[0].kernel_size == (7, 7) and convs[0].out_channels == 16
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())

    # Parameter count computed from the published layer list, independently of the code.
    def conv(i, o, k):
        return i * o * k * k + o

    expected = conv(2, 16, 7) + 3 * 2 * conv(16, 16, 3) + conv(16, 32, 3) + conv(32, 32, 3) + conv(16, 32, 1)
    expected += 3 * 2 * conv(32, 32, 3) + (32 + 1)
    assert count_parameters(m) == expected


def test_vit_patching_pads_to_a_multiple_of_the_patch():
    assert default_patch_size((32, 32)) == 4 and default_patch_size((125, 125)) == 16
    pe = PatchEmbed(3, (125, 125), 16, 8)
    assert pe.grid == (8, 8) and pe.padding == (1, 2, 1, 2)  # 125 + 3 = 128 on each axis
    m = VisionTransformer(3, (125, 125), 1, patch_size=10, embed_dim=32, depth=1, num_heads=2)
    assert m.pos_embed.shape == (1, 13 * 13 + 1, 32)


def test_vit_parameter_count_from_definition():
    d, depth, c, p, n_tok, r = 64, 4, 2, 4, 64, 2.0
    m = create_model("vit_micro", in_chans=c, img_size=32, patch_size=p)
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * int(r * d) + int(r * d)) + (int(r * d) * d + d)
    expected = (c * p * p * d + d) + d + (n_tok + 1) * d + depth * block + 2 * d + (d + 1)
    assert count_parameters(m) == expected


def test_scalar_inputs_are_fused_before_the_head():
    m = create_model("resnet15", in_chans=2, img_size=32, num_scalars=3)
    x, s = torch.randn(4, 2, 32, 32), torch.randn(4, 3)
    assert m(x, s).shape == (4, 1)
    with pytest.raises(ValueError, match="num_scalars=3: pass scalars"):
        m(x)
    m.eval()
    with torch.no_grad():  # the scalars change the output
        assert not torch.allclose(m(x, s), m(x, torch.zeros_like(s)))


def test_attention_map_kept_on_request_rows_sum_to_one():
    m = create_model("vit_micro", in_chans=2, img_size=32).eval()
    attn = m.blocks[-1].attn
    attn.keep_attention = True
    with torch.no_grad():
        m(torch.randn(2, 2, 32, 32))
    assert attn.last_attention.shape == (2, 4, 65, 65)
    torch.testing.assert_close(attn.last_attention.sum(-1), torch.ones(2, 4, 65))


def test_flops_match_a_hand_count_for_resnet15():
    # multiply-adds × 2 per conv: stem 7×7 at 32², six 16→16 3×3 at 16², the stride-2 block
    # (3×3 16→32 and 1×1 projection at 8², then 32→32), six 32→32 at 8², and the 32→1 head.
    def conv(i, o, k, hw):
        return 2 * i * o * k * k * hw * hw

    expected = (
        conv(2, 16, 7, 32)
        + 6 * conv(16, 16, 3, 16)
        + conv(16, 32, 3, 8)
        + conv(16, 32, 1, 8)
        + 7 * conv(32, 32, 3, 8)
        + 2 * 32
    )
    model = create_model("resnet15", in_chans=2, img_size=32)
    assert count_flops(model, 2, 32) == expected
    row = model_table(in_chans=2, img_size=32, flops=True, pattern="resnet15")[0]
    assert row["flops"] == expected  # the meta-device count used by `e2evision models` agrees


def test_model_table_and_entries():
    rows = {r["name"]: r for r in model_table(in_chans=2, img_size=32)}
    assert rows["resnet15"]["params"] == count_parameters(create_model("resnet15", in_chans=2, img_size=32))
    assert get_entry("vit_tiny").defaults["embed_dim"] == 192
    with pytest.raises(ValueError, match="in_chans must be >= 1"):
        create_model("resnet15", in_chans=0, img_size=32)
